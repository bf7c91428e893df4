"""Goals and directives in the town API: the operator's goals, and the fixed set of tracked directives the
overseer gives the mayor (issued -> acknowledged -> done | refused), deduplicated while open.

Only the overseer role (the operator, or the overseer's model loop) adds goals and issues directives; the mayor
reads the directives addressed to it and acknowledges, completes or refuses them. A directive reaches the mayor
as a nudge (on its next tool result, or as the prompt that resumes its ended session); an escalation reaches
the human as mail to the operator. A goal is achieved when every convoy linked to it has landed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from gastown_mcp import rigs
from gastown_mcp.errors import Conflict, GastownError, InvalidInput, NotFound
from gastown_mcp.models import CLOSED_STATUSES, Agent, BeadStatus, MessageKind, Role, Verb
from gastown_mcp.town import guard
from gastown_mcp.town.base import OPERATOR
from gastown_mcp.town.budgets import AgentUsage, Budgets
from gastown_mcp.town.directives import (
    NEEDS,
    Directive,
    DirectiveIn,
    DirectiveKind,
    DirectiveState,
    directive_of,
    message_body,
)
from gastown_mcp.town.plans import PlanResult, PlansAPI

FAILURE_VERBS = (Verb.merge_failed.value, Verb.verify_failed.value, Verb.bead_blocked.value)
RIG_CONTROL = "rig_control:"


class GoalState(StrEnum):
    active = "active"
    achieved = "achieved"
    abandoned = "abandoned"


class GoalConvoy(BaseModel):
    id: str
    title: str
    landed: bool
    progress: dict[str, int]


class Goal(BaseModel):
    id: int
    text: str
    rig: str | None = None
    budget_usd: float | None = None
    spent_usd: float = Field(default=0.0, description="metered for the polecats that worked its convoys' beads")
    state: GoalState
    reason: str = ""
    created_by: str
    created_at: str
    closed_at: str | None = None
    convoys: list[GoalConvoy] = Field(default_factory=list)
    directives: list[Directive] = Field(default_factory=list, description="its open directives")


class GoalsAPI(PlansAPI):
    budgets: Budgets  # set up by BudgetsAPI, beside this class in Town

    # -- goals -------------------------------------------------------------------------------------
    def goal_add(self, actor: Agent, text: str, rig: str | None = None, budget_usd: float | None = None) -> Goal:
        """State a goal: what should be true when the work for it has landed."""
        self._require(actor, "goal.manage", "add goals")
        text = guard.text("goal", text, 8000).strip()
        if not text:
            raise InvalidInput("a goal needs text saying what should be true when it is achieved")
        if rig is not None:
            rigs.get_rig(self.settings.town_dir, rig)
        if budget_usd is not None and budget_usd < 0:
            raise InvalidInput(f"a goal's budget must be 0 or more USD, not {budget_usd}")
        return self._goal(self._store.goals.add_goal(actor.name, text, rig, budget_usd))

    def goal_list(self, actor: Agent, state: str | None = None, limit: int = 50) -> list[Goal]:
        self._require(actor, "goal.read", "read goals")
        wanted = guard.choice(GoalState, state, "goal state").value if state else None
        return [self._goal_of(r) for r in self._store.goals.goals(wanted, guard.limit(limit))]

    def goal_show(self, actor: Agent, goal_id: int) -> Goal:
        self._require(actor, "goal.read", "read goals")
        return self._goal(goal_id)

    def goal_update(self, actor: Agent, goal_id: int, state: str, reason: str = "") -> Goal:
        """Close a goal by hand: achieved (the operator says so) or abandoned."""
        self._require(actor, "goal.manage", "close goals")
        target = guard.choice(GoalState, state, "goal state")
        if target is GoalState.active:
            raise InvalidInput("a goal can be set achieved or abandoned; add a new goal to start again")
        goal = self._goal(goal_id)
        if goal.state is not GoalState.active:
            raise InvalidInput(f"goal {goal_id} is already {goal.state.value}")
        why = guard.text("reason", reason, 2000) or f"marked {target.value} by {actor.name}"
        self._store.goals.close_goal(actor.name, goal_id, target.value, why, {"by": actor.name})
        return self._goal(goal_id)

    def goal_link(self, actor: Agent, goal_id: int, convoy_id: str) -> Goal:
        """Record that a convoy was made for a goal (the goal is achieved when all of its convoys land)."""
        self._require(actor, "directive.handle", "link convoys to goals")
        self._goal(goal_id)
        self._convoy(convoy_id)  # refuses what is not a convoy
        self._store.goals.link(actor.name, goal_id, convoy_id)
        return self._goal(goal_id)

    def goals_landed(self, actor: Agent, convoy_id: str) -> list[Goal]:
        """After a convoy landed: each active goal it belongs to whose convoys have all landed is achieved."""
        self._require(actor, "goal.manage", "close goals")
        achieved = []
        for goal_id in self._store.goals.goals_of_convoy(convoy_id):
            goal = self._goal(goal_id)
            if goal.state is not GoalState.active or not all(c.landed for c in goal.convoys):
                continue
            reason = f"all {len(goal.convoys)} of its convoys landed ({', '.join(c.id for c in goal.convoys)})"
            details = {
                "convoys": [c.id for c in goal.convoys],
                "merged": sum(c.progress["merged"] for c in goal.convoys),
            }
            if self._store.goals.close_goal(actor.name, goal_id, GoalState.achieved.value, reason, details):
                achieved.append(self._goal(goal_id))
        return achieved

    def _goal(self, goal_id: int) -> Goal:
        return self._goal_of(self._store.goals.goal(goal_id))

    def _goal_of(self, row: sqlite3.Row) -> Goal:
        convoys = []
        for cid in self._store.goals.convoys_of(row["id"]):
            c = self._convoy(cid)
            convoys.append(GoalConvoy(id=c.id, title=c.title, landed=c.landed, progress=c.progress))
        open_ones = [
            directive_of(d)
            for d in self._store.goals.directives(("issued", "acknowledged"), limit=500)
            if d["goal_id"] == row["id"]
        ]
        spent = self._store.goals.spent(row["id"])[0] if convoys else 0.0
        return Goal(
            id=row["id"],
            text=row["text"],
            rig=row["rig"],
            budget_usd=row["budget_usd"],
            spent_usd=round(spent, 6),
            state=row["state"],
            reason=row["reason"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            closed_at=row["closed_at"],
            convoys=convoys,
            directives=open_ones,
        )

    # -- directives --------------------------------------------------------------------------------
    def directive_issue(
        self, actor: Agent, directive: DirectiveIn, *, attempts: int = 1, next_at: str | None = None
    ) -> Directive:
        """Give the mayor a directive (an escalation goes to the human): one tracked message, never two open
        at once for the same thing (`Conflict` names the open one)."""
        self._require(actor, "directive.issue", "issue directives")
        missing = [name for name in NEEDS[directive.kind] if getattr(directive, name) is None]
        if missing:
            raise InvalidInput(f"the {directive.kind.value} directive needs {', '.join(missing)}")
        goal = self._goal(directive.goal) if directive.goal is not None else None
        if goal is not None and goal.state is not GoalState.active:
            raise InvalidInput(f"goal {goal.id} is {goal.state.value}; directives are for active goals")
        rig = directive.rig or (goal.rig if goal else None)
        if rig is not None:
            rigs.get_rig(self.settings.town_dir, rig)
        if directive.bead is not None:
            self._store.beads.get(directive.bead)
        args = {**directive.args(), **({"rig": rig} if rig else {})}
        if goal is not None:
            args["text"] = goal.text[:2000]  # what the mayor plans, without another call
        if directive.kind is DirectiveKind.escalate:
            recipient, delivery = OPERATOR, MessageKind.mail
        else:
            recipient, delivery = self._mayor_name(), MessageKind.nudge
            if recipient == OPERATOR:
                delivery = MessageKind.mail  # no mayor agent: the operator is the mayor, and reads mail
        directive_id = self._store.goals.issue(
            actor.name,
            kind=directive.kind.value,
            args=args,
            goal_id=directive.goal,
            key=directive.key(),
            reason=directive.reason,
            recipient=recipient,
            delivery=delivery,
            message=lambda i: (
                message_body(directive, args, goal.text if goal else None, i),
                f"directive #{i}: {directive.kind.value}",
            ),
            attempts=attempts,
            next_at=next_at,
        )
        return directive_of(self._store.goals.directive(directive_id))

    def directive_list(self, actor: Agent, state: str | None = None, limit: int = 50) -> list[Directive]:
        """Directives newest first: the mayor sees those addressed to it, the overseer every one."""
        self._require(actor, "directive.read", "read directives")
        states = (guard.choice(DirectiveState, state, "directive state").value,) if state else ()
        recipient = None if guard.roles.can(actor.role, "directive.issue") else actor.name
        return [directive_of(r) for r in self._store.goals.directives(states, recipient, guard.limit(limit))]

    def directive_show(self, actor: Agent, directive_id: int) -> Directive:
        self._require(actor, "directive.read", "read directives")
        found = directive_of(self._store.goals.directive(directive_id))
        self._owndirective_of(actor, found)
        return found

    def directive_update(
        self, actor: Agent, directive_id: int, state: str, note: str = "", convoy: str | None = None
    ) -> Directive:
        """The mayor acknowledges a directive, then reports it done or refused (with why). Done for plan_goal
        with `convoy` links the plan's convoy to the goal; done for a rig directive applies it."""
        self._require(actor, "directive.handle", "acknowledge or complete directives")
        target = guard.choice(DirectiveState, state, "directive state")
        if target is DirectiveState.issued:
            raise InvalidInput("a directive can be set acknowledged, done or refused")
        found = directive_of(self._store.goals.directive(directive_id))
        self._owndirective_of(actor, found)
        note = guard.text("note", note, 2000)
        if target is DirectiveState.refused and not note.strip():
            raise InvalidInput("say why in note when you refuse a directive: the overseer reads it")
        if convoy is not None and target is DirectiveState.done and found.goal is not None:
            self.goal_link(actor, found.goal, convoy)
        if target is DirectiveState.done and found.state is not DirectiveState.done:
            self._apply_rigdirective_of(actor, found)
        return directive_of(self._store.goals.set_state(actor.name, directive_id, target.value, note))

    def directive_plan(
        self, actor: Agent, directive_id: int, goal: str, rig: str | None = None, dry_run: bool = False
    ) -> PlanResult:
        """Carry out a plan_goal directive in one call: take it (acknowledged), plan the goal as `plan_create`
        does, and report it done with the new convoy linked to the directive's goal. A plan that fails leaves
        the directive acknowledged, so the mayor can try again or refuse it with why."""
        self._require(actor, "directive.handle", "carry out directives")
        self._require(actor, "plan.create", "make plans")
        if dry_run:
            raise InvalidInput("a dry run creates nothing, so it cannot carry out a directive: leave out directive")
        found = directive_of(self._store.goals.directive(directive_id))
        self._owndirective_of(actor, found)
        if found.kind is not DirectiveKind.plan_goal:
            raise InvalidInput(
                f"directive #{found.id} is a {found.kind.value} directive; plan_create carries out plan_goal "
                "directives only (report others with directive_update)"
            )
        if found.state not in (DirectiveState.issued, DirectiveState.acknowledged):
            raise Conflict(f"directive #{found.id} is already {found.state.value}; nothing was planned")
        if found.state is DirectiveState.issued:
            self._store.goals.set_state(actor.name, found.id, DirectiveState.acknowledged.value, "")
        result = self.plan_create(actor, goal, rig)
        if result.convoy is None:  # plan_create without dry_run always creates one
            raise GastownError(f"directive #{found.id}: the plan made no convoy")
        self.directive_update(
            actor, found.id, DirectiveState.done.value, f"planned as convoy {result.convoy.id}", result.convoy.id
        )
        return result.model_copy(update={"directive": found.id})

    def directive_history(self, actor: Agent, key: str) -> list[Directive]:
        """Every directive ever issued for the same thing (`key`), oldest first."""
        self._require(actor, "directive.issue", "read directive history")
        return [directive_of(r) for r in self._store.goals.history(key)]

    def _owndirective_of(self, actor: Agent, directive: Directive) -> None:
        if directive.recipient != actor.name and not guard.roles.can(actor.role, "directive.issue"):
            raise NotFound(f"no directive {directive.id} for {actor.name}; list yours with directive_list")

    def _mayor_name(self) -> str:
        mayors = [a for a in self._store.agents.all(role=Role.mayor) if a.state.value != "removed"]
        return mayors[0].name if mayors else OPERATOR

    # -- rig controls a directive can change (the scheduler reads them) ----------------------------------
    def _apply_rigdirective_of(self, actor: Agent, directive: Directive) -> None:
        rig = directive.args.get("rig")
        if not rig or directive.kind not in (
            DirectiveKind.pause_rig,
            DirectiveKind.resume_rig,
            DirectiveKind.set_max_polecats,
        ):
            return
        current = dict(self.rig_control(str(rig)))
        if directive.kind is DirectiveKind.pause_rig:
            current["paused"] = True
        elif directive.kind is DirectiveKind.resume_rig:
            current["paused"] = False
        else:
            current["max_polecats"] = int(directive.args["max_polecats"])
        current.update(by=actor.name, directive=directive.id)
        self._store.health.set(actor.name, RIG_CONTROL + str(rig), current, Verb.directive_done)

    def rig_control(self, rig: str) -> dict[str, Any]:
        """What directives changed about a rig: `paused` (no dispatch) and `max_polecats` (overrides town.toml)."""
        return self._store.health.get(RIG_CONTROL + rig) or {}

    # -- what the overseer loop reads and records ---------------------------------------------------------
    def overseer_summary(self, actor: Agent, limit: int = 10) -> dict[str, Any]:
        """A compact picture of the town for the overseer's model: active goals with their convoys and open
        directives, blocked and failing beads, refused directives, rigs; not raw tables."""
        self._require(actor, "directive.issue", "read the overseer's summary")
        goals = [
            {
                "id": g.id,
                "text": g.text[:500],
                "rig": g.rig,
                **({"budget_usd": g.budget_usd, "spent_usd": g.spent_usd} if g.budget_usd is not None else {}),
                "convoys": [{"id": c.id, "landed": c.landed, "progress": c.progress} for c in g.convoys],
                "open_directives": [{"id": d.id, "kind": d.kind.value, "state": d.state.value} for d in g.directives],
            }
            for g in self.goal_list(actor, GoalState.active.value, 20)
        ]
        blocked = [
            {"id": b.id, "title": b.title[:120], "failures": self.bead_failures(actor, b.id)}
            for b in self._store.beads.search(status=[BeadStatus.blocked.value], limit=limit)
        ]
        refused = [
            {"id": d["id"], "kind": d["kind"], "key": d["dedup_key"], "note": d["note"][:300]}
            for d in self._store.goals.directives(("refused",), limit=5)
        ]
        counts = self._store.beads.counts()
        return {
            "goals": goals,
            "rigs": [
                {"name": r.name, **({"control": c} if (c := self.rig_control(r.name)) else {})}
                for r in rigs.list_rigs(self.settings.town_dir)
            ],
            "beads": {k: v for k, v in counts.items() if k not in {s.value for s in CLOSED_STATUSES} and v},
            "ready": self._store.beads.ready_count(),
            "blocked": blocked,
            "refused_directives": refused,
        }

    def usage_by_role(self, actor: Agent) -> list[RoleUsage]:
        """The town's model spend by role (overseer, mayor, refinery, deacon, polecat ...), with each share."""
        self._require(actor, "town.usage", "read usage")
        roles = {a.name: a.role.value for a in self._store.agents.all(include_removed=True)}
        return usage_by_role(self.budgets.usage(), roles)

    def bead_failures(self, actor: Agent, bead_id: str) -> int:
        """How often a bead has failed: gates or verify commands red, or blocked."""
        self._require(actor, "bead.read", "read beads")
        return self._store.goals.failures(bead_id, FAILURE_VERBS)

    def overseer_record(self, actor: Agent, verb: Verb, after: dict[str, Any], bead_id: str | None = None) -> None:
        """An overseer decision (or a decision not to act) as an event with its reasons."""
        self._require(actor, "directive.issue", "record overseer decisions")
        self._store.goals.record(actor.name, verb, after, bead_id)

    def overseer_cursor(self, actor: Agent) -> int | None:
        """Where the overseer stopped reading the audit trail (kept in the store: a restart resumes there);
        None before its first tick, or when the trail is behind it (a town restored from an older backup)."""
        self._require(actor, "directive.issue", "read the overseer's cursor")
        found = self._store.goals.cursor(actor.name)
        return found if found is not None and found <= self._store.events.last_id() else None

    def overseer_cursor_set(self, actor: Agent, event_id: int) -> None:
        self._require(actor, "directive.issue", "move the overseer's cursor")
        self._store.goals.set_cursor(actor.name, event_id)

    def tell_operator_once(self, actor: Agent, key: str, subject: str, body: str) -> bool:
        """Mail the human once about `key` (the overseer stopping, say); False when already told."""
        self._require(actor, "directive.issue", "mail the operator for the overseer")
        return self._store.health.mail_once(actor.name, OPERATOR, key, subject, body)

    def overseer_budget(self, actor: Agent, usd: float | None) -> None:
        """Give the overseer's own agent (its gateway key's owner) its USD budget."""
        self._require(actor, "town.budget.set", "set budgets")
        found = self._store.agents.find(Role.overseer.value)
        if found is None or found.state.value == "removed":
            self._store.agents.create("town", Role.overseer.value, Role.overseer)  # its key comes from model_key
        if usd is not None:
            self.budgets.set(actor.name, "agent", Role.overseer.value, usd=usd)

    def overseer_spent(self, actor: Agent) -> bool:
        """The overseer's own budget (or one it spends from) is spent."""
        self._require(actor, "town.budget", "read budgets")
        found = self._store.agents.find(Role.overseer.value)
        if found is None:
            return False
        return any(b.exhausted for b in self.budgets.applying_to(found.name, found.rig))


def usage_by_role(rows: Sequence[AgentUsage], roles: dict[str, str]) -> list[RoleUsage]:
    """Sum per-agent usage by role (an agent no longer in the table counts as `unknown`)."""
    by: dict[str, list[AgentUsage]] = {}
    for u in rows:
        by.setdefault(roles.get(u.agent, "unknown"), []).append(u)

    def tokens(u: AgentUsage) -> int:
        return u.input_tokens + u.output_tokens + u.cache_creation_tokens + u.cache_read_tokens

    total = sum(tokens(u) for u in rows) or 1
    out = [
        RoleUsage(
            role=role,
            agents=len(us),
            requests=sum(u.requests for u in us),
            tokens=sum(tokens(u) for u in us),
            cost_usd=round(sum(u.cost_usd for u in us), 9),
            share=round(sum(tokens(u) for u in us) / total, 4),
        )
        for role, us in by.items()
    ]
    return sorted(out, key=lambda r: -r.tokens)


class RoleUsage(BaseModel):
    """What one role spent, summed over its agents, and its share of the town's tokens."""

    role: str
    agents: int
    requests: int
    tokens: int
    cost_usd: float
    share: float = Field(description="this role's tokens / every role's tokens (0..1)")
