"""Plans, convoys and acceptance in the town API: the refinery's plan of beads, checked before anything is
written and created in one transaction; convoy progress; and the deacon's checks before work lands.

Every bead of a plan carries acceptance criteria, each with a `verify` shell command that exits 0 when the
criterion is met. The merge queue runs them on the candidate tree in a gate container (`merge_verify`) after
the rig's gates; a rig with `review = "model"` also asks the deacon's model (`merge_review`), which can send a
bead back but never land one: it is asked only about beads whose verify commands passed.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from gastown_mcp import rigs
from gastown_mcp.errors import GastownError, InvalidInput, NotFound
from gastown_mcp.models import Agent, Bead, BeadStatus, MergeRequest, Role, StrictModel, Verb
from gastown_mcp.store.plans import NewItem
from gastown_mcp.town import guard
from gastown_mcp.town.merges import FRESH_TREE, GateResult, MergesAPI

VERIFY_LOG_LINES = 80
KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"


# -- the plan: what a planner must produce (its JSON schema is the `submit_plan` tool's input) ---------------
class Criterion(StrictModel):
    text: str = Field(min_length=1, max_length=2000, description="what must hold, stated so it can be measured")
    verify: str = Field(
        min_length=1,
        max_length=2000,
        description="a shell command run at the repository root in the gate container (no network); exit 0 = met",
    )


class PlanItem(StrictModel):
    key: str = Field(pattern=KEY_PATTERN, description="short unique id of this item, used in depends_on")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=8000)
    type: Literal["task", "bug", "feature", "chore"] = "task"
    priority: int = Field(default=2, ge=0, le=4, description="0 highest, 4 lowest")
    depends_on: list[str] = Field(default_factory=list, description="keys of items that must land first")
    files: list[str] = Field(default_factory=list, description="the files or directories this item may touch")
    complexity: int = Field(ge=1, le=10, description="1 trivial, 10 very large")
    acceptance: list[Criterion] = Field(default_factory=list, description="at least one criterion")


class Plan(StrictModel):
    title: str = Field(min_length=1, max_length=200, description="the convoy's title")
    summary: str = Field(default="", max_length=8000)
    items: list[PlanItem] = Field(default_factory=list)


def plan_schema() -> dict[str, Any]:
    return Plan.model_json_schema()


def check_plan(raw: Any, max_items: int, max_criteria: int) -> tuple[Plan | None, list[str]]:
    """A plan and no problems, or None and every problem found (each a line the planner or a person can act on)."""
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        return None, [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
    problems: list[str] = []
    if not plan.items:
        problems.append("the plan has no items; a plan needs at least one bead")
    if len(plan.items) > max_items:
        problems.append(
            f"the plan has {len(plan.items)} items; at most {max_items} ([planner] max_items): plan a smaller goal"
        )
    keys: dict[str, PlanItem] = {}
    titles: set[str] = set()
    for item in plan.items:
        if item.key in keys:
            problems.append(f"item {item.key!r}: the key is used twice; keys must be unique")
        keys[item.key] = item
        if item.title.strip().lower() in titles:
            problems.append(f"item {item.key!r}: the title {item.title!r} is used twice; titles must be unique")
        titles.add(item.title.strip().lower())
        if not item.acceptance:
            problems.append(f"item {item.key!r}: no acceptance criterion; each needs one with a verify command")
        elif len(item.acceptance) > max_criteria:
            problems.append(f"item {item.key!r}: {len(item.acceptance)} criteria; at most {max_criteria}")
        for c in item.acceptance:
            if not c.verify.strip():
                problems.append(f"item {item.key!r}: criterion {c.text[:60]!r} has an empty verify command")
    for item in plan.items:
        for dep in item.depends_on:
            if dep == item.key:
                problems.append(f"item {item.key!r} depends on itself")
            elif dep not in keys:
                problems.append(f"item {item.key!r} depends on {dep!r}, which is not an item of this plan")
    cycle = _cycle({k: [d for d in i.depends_on if d in keys and d != k] for k, i in keys.items()})
    if cycle:
        problems.append(f"dependency cycle: {' -> '.join(cycle)}; a plan must be a DAG")
    return (None, problems) if problems else (plan, [])


def _where(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "plan"


def _cycle(graph: dict[str, list[str]]) -> list[str]:
    """One dependency cycle (keys, first repeated at the end), or []."""
    state: dict[str, int] = dict.fromkeys(graph, 0)
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state[nxt] == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state[nxt] == 0 and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if state[node] == 0 and (found := visit(node)):
            return found
    return []


def acceptance_text(criteria: Sequence[Criterion]) -> str:
    return "\n".join(f"{n}. {c.text}\n   verify: `{c.verify}`" for n, c in enumerate(criteria, 1))


# -- the models the town asks (built in planners/, handed in by the composition root) ----------------------
@dataclass(frozen=True)
class Draft:
    """A planner's answer: the `submit_plan` input as the model gave it, and what the request cost."""

    plan: Any
    input_tokens: int = 0
    output_tokens: int = 0
    ref: str = ""  # the tool call's id, so a repair round can answer it


class Planner(Protocol):
    def draft(self, goal: str, rig: str | None, repair: tuple[Draft, list[str]] | None = None) -> Draft:
        """A plan for `goal`; with `repair`, the previous answer and its problems, to be fixed."""
        ...


class CriterionVerdict(StrictModel):
    criterion: int = Field(ge=1, description="the criterion's number, from 1")
    passed: bool
    reason: str = Field(min_length=1, max_length=2000)


class Verdict(StrictModel):
    verdicts: list[CriterionVerdict]
    summary: str = Field(default="", max_length=4000)


class Reviewer(Protocol):
    def review(self, bead: Bead, criteria: Sequence[Criterion], diff: str) -> Verdict: ...


# -- what the API returns ------------------------------------------------------------------------------
class ConvoyBead(BaseModel):
    id: str
    key: str | None = None
    title: str
    state: str = Field(description="open, in_progress, blocked, awaiting_merge, merged, done or cancelled")
    assignee: str | None = None


class Convoy(BaseModel):
    id: str
    title: str
    goal: str = ""
    rig: str | None = None
    landed: bool
    cancelled: bool = Field(False, description="every bead of it was cancelled: nothing of it will land")
    progress: dict[str, int]
    beads: list[ConvoyBead]


class PlanResult(BaseModel):
    plan: Plan
    convoy: Convoy | None = Field(default=None, description="what was created (none for a dry run)")
    rounds: int = Field(description="planner requests: 1, or 2 after a repair round")
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    directive: int | None = Field(default=None, description="the plan_goal directive this plan carried out (now done)")


@dataclass
class Models:
    planner: Planner | None = None
    reviewer: Reviewer | None = None


class PlansAPI(MergesAPI):
    _models: Models | None = None
    _model_keys: dict[str, str]

    # -- the models (planners/ builds them; assemble.py hands them in) -----------------------------------
    def use_models(self, factory: Callable[[PlansAPI], Models]) -> None:
        self._models = factory(self)
        self._model_keys = {}

    def model_key(self, role: Role, refresh: bool = False) -> str:
        """The gateway key of a planner's own agent (`refinery`, `deacon`), created on first use, so its
        requests are metered and budgeted under it. Keys are shown once: this process issues its own."""
        if not refresh and role.value in self._model_keys:
            return self._model_keys[role.value]
        found = self._store.agents.find(role.value)
        if found is None or found.state.value == "removed":
            creds = self._store.agents.create("town", role.value, role)
        elif found.role is not role:
            raise InvalidInput(f"agent {role.value!r} exists with role {found.role.value}; rename it")
        else:
            creds = self._store.agents.rotate("town", role.value)
        self._model_keys[role.value] = creds.gateway_key
        return creds.gateway_key

    def _planner(self) -> Planner:
        if self._models is None or self._models.planner is None:
            raise GastownError(
                "no planner here: plans are made through a running town's gateway (start it with `gastown up`), "
                "or write the plan yourself and use `gastown plan apply FILE`"
            )
        return self._models.planner

    # -- plans -----------------------------------------------------------------------------------------
    def plan_create(self, actor: Agent, goal: str, rig: str | None = None, dry_run: bool = False) -> PlanResult:
        """Ask the planner for a plan, check it (one repair round), and create it unless `dry_run`."""
        self._require(actor, "plan.create", "make plans")
        goal = guard.text("goal", goal, 8000).strip()
        if not goal:
            raise InvalidInput("a plan needs a goal: say what should be true when the convoy lands")
        if rig is not None:
            rigs.get_rig(self.settings.town_dir, rig)
        planner, cfg = self._planner(), self.settings.planner
        started = time.monotonic()
        draft = planner.draft(goal, rig)
        rounds, tokens_in, tokens_out = 1, draft.input_tokens, draft.output_tokens
        plan, problems = check_plan(draft.plan, cfg.max_items, cfg.max_criteria)
        if plan is None:
            draft = planner.draft(goal, rig, (draft, problems))
            rounds, tokens_in, tokens_out = 2, tokens_in + draft.input_tokens, tokens_out + draft.output_tokens
            plan, problems = check_plan(draft.plan, cfg.max_items, cfg.max_criteria)
        if plan is None:
            raise InvalidInput(
                "the planner's plan was refused after a repair round; nothing was created:\n"
                + "\n".join(f"- {p}" for p in problems)
            )
        convoy = None if dry_run else self._create_plan(actor, plan, rig, goal)
        return PlanResult(
            plan=plan,
            convoy=convoy,
            rounds=rounds,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            seconds=round(time.monotonic() - started, 3),
        )

    def plan_apply(self, actor: Agent, plan: Any, rig: str | None = None, goal: str = "") -> Convoy:
        """Create a plan written or reviewed by a person (the JSON `gastown plan --dry-run --json` prints)."""
        self._require(actor, "plan.create", "make plans")
        if rig is not None:
            rigs.get_rig(self.settings.town_dir, rig)
        checked, problems = check_plan(plan, self.settings.planner.max_items, self.settings.planner.max_criteria)
        if checked is None:
            raise InvalidInput("the plan was refused; nothing was created:\n" + "\n".join(f"- {p}" for p in problems))
        return self._create_plan(actor, checked, rig, guard.text("goal", goal, 8000))

    def _create_plan(self, actor: Agent, plan: Plan, rig: str | None, goal: str) -> Convoy:
        labels = [f"rig:{rig}"] if rig else []
        epic = {
            "title": plan.title,
            "description": (f"Goal: {goal}\n\n" if goal else "") + plan.summary,
            "labels": labels,
            "metadata": {"convoy": {"goal": goal, "rig": rig}},
        }
        items = [
            NewItem(
                key=i.key,
                fields={
                    "title": i.title,
                    "description": i.description,
                    "acceptance": acceptance_text(i.acceptance),
                    "type": i.type,
                    "priority": i.priority,
                    "labels": labels,
                    "metadata": {
                        "plan_key": i.key,
                        "files": i.files,
                        "complexity": i.complexity,
                        "verify": [c.model_dump() for c in i.acceptance],
                    },
                },
                depends_on=i.depends_on,
            )
            for i in plan.items
        ]
        epic_id = self._store.plans.create(actor.name, epic, items)
        self._intent_recorded()  # the plan's roots are ready work
        return self._convoy(epic_id)

    # -- convoys ---------------------------------------------------------------------------------------
    def convoy_list(self, actor: Agent, limit: int = 50) -> list[Convoy]:
        self._require(actor, "bead.read", "list convoys")
        return [self._convoy(c) for c in self._store.plans.convoys(guard.limit(limit))]

    def convoy_show(self, actor: Agent, convoy_id: str) -> Convoy:
        self._require(actor, "bead.read", "read convoys")
        return self._convoy(convoy_id)

    def _convoy(self, epic_id: str) -> Convoy:
        epic = self._store.beads.get(epic_id)
        meta = epic.metadata.get("convoy")
        if not isinstance(meta, dict):
            raise NotFound(f"{epic_id} is not a convoy; list convoys with `gastown convoy list`")
        beads = []
        progress = dict.fromkeys(("open", "in_progress", "awaiting_merge", "merged", "cancelled"), 0)
        for r in self._store.plans.children(epic_id):
            state = "merged" if r["merged"] else "awaiting_merge" if r["merge_pending"] else r["status"]
            progress[state] = progress.get(state, 0) + 1
            beads.append(ConvoyBead(id=r["id"], key=r["key"], title=r["title"], state=state, assignee=r["assignee"]))
        return Convoy(
            id=epic.id,
            title=epic.title,
            goal=str(meta.get("goal") or ""),
            rig=meta.get("rig"),
            landed=epic.status is BeadStatus.done,
            cancelled=epic.status is BeadStatus.cancelled,
            progress=progress,
            beads=beads,
        )

    # -- the deacon's acceptance checks in the merge queue ------------------------------------------------
    def merge_verify(
        self, actor: Agent, rig: str, candidate: rigs.Candidate, requests: Sequence[MergeRequest]
    ) -> GateResult:
        """Run every verify command of the beads landing in `candidate`, each bead on a fresh copy of the tree,
        in a gate container; stops at the first failure, which it names (bead, criterion, command, exit)."""
        self._require(actor, "merge.admin", "run the merge queue")
        checks = [(r.bead_id, _criteria(self._store.beads.get(r.bead_id))) for r in requests]
        checks = [(b, cs) for b, cs in checks if cs]
        if not checks:
            return GateResult(True, "no verify commands for these beads")
        parts = [
            'check() { echo "[verify $1] $2"; sh -c "$2" 2>&1; rc=$?; '
            'if [ $rc -ne 0 ]; then echo "[verify failed: $1 exit $rc]"; exit 3; fi; }'
        ]
        for bead_id, criteria in checks:
            parts.append(FRESH_TREE)
            parts += [
                f"check {shlex.quote(f'{bead_id}#{n}')} {shlex.quote(c.verify)}" for n, c in enumerate(criteria, 1)
            ]
            parts.append(f"echo {shlex.quote(f'[verify passed: {bead_id}]')}")
        passed, status, log = self._in_gate_container(rig, candidate, "\n".join(parts), VERIFY_LOG_LINES)
        for bead_id in re.findall(r"^\[verify passed: (\S+)\]$", log, re.M):
            self._store.plans.record(actor.name, Verb.verify_passed, bead_id, {"commit": candidate.commit})
        if passed:
            return GateResult(True, f"{log.rstrip()}\n[verify passed]")
        failed = re.search(r"^\[verify failed: (\S+)#(\d+) exit (\d+)\]$", log, re.M)
        if failed is None:  # the container itself failed (timeout, OOM, the copy)
            detail = f"the verify commands did not finish ({status.reason or status.state}, exit {status.exit_code})"
        else:
            bead_id, n, code = failed.group(1), int(failed.group(2)), failed.group(3)
            criterion = dict(checks)[bead_id][n - 1]
            detail = (
                f"acceptance criterion {n} of {bead_id} failed: {criterion.text} (`{criterion.verify}` exit {code})"
            )
            self._store.plans.record(
                actor.name,
                Verb.verify_failed,
                bead_id,
                {"criterion": n, "verify": criterion.verify, "exit": int(code), "output": log[-2000:]},
            )
        return GateResult(False, f"{log.rstrip()}\n[verify failed]", detail)

    def merge_review(self, actor: Agent, rig: str, requests: Sequence[MergeRequest]) -> list[tuple[MergeRequest, str]]:
        """With `[rigs.<rig>] review = "model"`: the deacon's model judges each diff against its bead's
        acceptance; returns the requests it sends back, with why. Called only after verify passed."""
        self._require(actor, "merge.admin", "run the merge queue")
        if self.settings.rig(rig).review != "model":
            return []
        if self._models is None or self._models.reviewer is None:
            raise GastownError(f"rig {rig} asks for model review but this town has no reviewer (no gateway)")
        repo = rigs.get_rig(self.settings.town_dir, rig)
        rejected = []
        for request in requests:
            bead = self._store.beads.get(request.bead_id)
            criteria = _criteria(bead)
            if not criteria:
                continue  # not a planned bead: nothing stated to judge it against
            verdict = self._models.reviewer.review(bead, criteria, rigs.diff(repo, request.base, request.tip))
            self._store.plans.record(
                actor.name, Verb.review_verdict, bead.id, {"request": request.id, **verdict.model_dump()}
            )
            failed = [v for v in verdict.verdicts if not v.passed]
            judged = {v.criterion for v in verdict.verdicts}
            missing = [n for n in range(1, len(criteria) + 1) if n not in judged]
            if failed or missing:
                reasons = [f"criterion {v.criterion}: {v.reason}" for v in failed]
                reasons += [f"criterion {n}: not judged by the review" for n in missing]
                rejected.append((request, "; ".join(reasons)))
        return rejected


def _criteria(bead: Bead) -> list[Criterion]:
    found = bead.metadata.get("verify")
    if not isinstance(found, list):
        return []
    return [Criterion.model_validate(c) for c in found if isinstance(c, dict)]
