"""The overseer loop: a deterministic shell around the overseer's model, stepped by `tick()`.

Each tick reads the audit trail after its cursor (kept in the store: a restarted loop resumes where it stopped
and spends nothing when nothing changed meanwhile) and keeps only what matters: a goal added, a convoy landed,
a bead failing again, a directive refused, mail for the overseer or the operator, a budget spent, a town or rig
budget crossing 80 %, a goal's work crossing 80 % or 100 % of the goal's budget. Nothing that matters -> no
model request. A landed convoy achieves its goals without a model. Otherwise the model gets a
compact summary and chooses directives; the loop issues each unless the same one is open (dedup), backs off a
directive that did not stick (doubling waits), and after `max_attempts` asks the human once instead; triggers
about something already escalated are dropped. A spent overseer budget stops the directing (the town keeps
working) and tells the operator once. Every decision is an event with its reasons.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gastown_mcp.errors import BudgetExceeded, Conflict, GastownError
from gastown_mcp.models import Event, Role, Verb, now_iso
from gastown_mcp.town import Town, system_agent
from gastown_mcp.town.base import OPERATOR
from gastown_mcp.town.directives import Directive, DirectiveIn, DirectiveKind

FAILURES = (Verb.bead_blocked, Verb.merge_failed, Verb.verify_failed)
THRESHOLDS = (0.8, 1.0)  # shares of a goal's budget that wake the overseer once each
WARN_SHARE = 0.8  # the share of a town or rig budget that wakes it once before the budget is spent
BUDGET_CHECK_SECONDS = 5.0
EVENTS_PER_READ = 1000


class Model(Protocol):
    def decide(self, summary: dict[str, Any], triggers: list[str]) -> Any:
        """An answer with `directives` (DirectiveIn), `summary`, `input_tokens`, `output_tokens`."""
        ...


@dataclass(frozen=True)
class Step:
    """One thing the overseer did, for logs and tests."""

    verb: str  # achieved, issued, skipped, escalated, decided, stopped, failed
    target: str
    reason: str


@dataclass
class Tally:
    """What the loop has done since it started (the demo and tests read it)."""

    ticks: int = 0
    model_requests: int = 0
    woken: int = 0
    issued: list[int] = field(default_factory=list)


def _epoch(iso: str | None) -> float:
    if not iso:
        return 0.0
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class Overseer:
    def __init__(
        self, town: Town, model: Model, *, clock: Callable[[], float] = time.time, name: str = "overseer"
    ) -> None:
        self.town = town
        self.model = model
        self.clock = clock
        self.me = system_agent(name, Role.overseer)
        self.cfg = town.settings.overseer
        kept = town.overseer_cursor(self.me)
        self._kept = kept is not None  # a restart: the trail after its cursor holds what happened meanwhile
        self._cursor = kept if kept is not None else town.last_event_id(self.me)
        self._started = False
        self._stopped = False
        self._crossed: dict[int, float] = {}  # goal -> the highest budget threshold it has crossed
        self._warned: set[str] = set()  # town and rig budgets past WARN_SHARE (until they are raised or reset)
        self._budgets_at = 0.0
        self.tally = Tally()

    # -- the loop ----------------------------------------------------------------------------------
    def tick(self) -> list[Step]:
        if self.town.frozen() is not None:
            return []  # emergency stop: nothing is directed while the town is frozen
        self.tally.ticks += 1
        steps: list[Step] = []
        triggers: dict[str, str] = {}  # what woke it, deduplicated by subject
        if not self._started:
            self._started = True
            self.town.overseer_budget(self.me, self.cfg.budget_usd)
            triggers |= self._at_start(steps)  # what happened while the town was down
        cursor = self._cursor
        while True:  # all of it in one tick (a restart may find a long trail): one decision for the lot
            events = self.town.events(self.me, after_id=cursor, limit=EVENTS_PER_READ)
            for event in events:
                found = self._matters(event, steps)
                if found is not None:
                    triggers.setdefault(*found)
            cursor = events[-1].id if events else cursor
            if len(events) < EVENTS_PER_READ:
                break
        if cursor != self._cursor or not self._kept:
            self._cursor, self._kept = cursor, True  # kept from now on: the next start resumes here
            self.town.overseer_cursor_set(self.me, cursor)
        triggers |= self._goal_budgets()
        if not triggers or self._stopped:
            return steps
        if self.town.overseer_spent(self.me):
            return steps + self._stop("its budget is spent")
        self.tally.woken += 1
        return steps + self._decide(list(triggers.values()))

    # -- what matters ------------------------------------------------------------------------------
    def _matters(self, event: Event, steps: list[Step]) -> tuple[str, str] | None:
        """(subject, why it matters) for an event that needs judgement; deterministic follow-ups go to `steps`."""
        after = event.after or {}
        if event.actor == self.me.name:
            return None  # its own doing (directives, escalation mail, goals achieved) wakes nothing
        verb = event.verb
        if verb == Verb.goal_added:
            return f"goal:{after.get('goal')}", f"goal {after.get('goal')} was added: {after.get('text', '')!s:.200}"
        if verb == Verb.convoy_landed and event.bead_id:
            for goal in self.town.goals_landed(self.me, event.bead_id):
                steps.append(Step("achieved", f"goal {goal.id}", goal.reason))
            return None  # landing achieves goals by itself; no judgement needed
        if verb in FAILURES and event.bead_id:
            bead = event.bead_id
            if self._escalated(f"bead:{bead}"):
                return None  # the human has it: back off instead of waking for it again
            failures = self.town.bead_failures(self.me, bead)
            if failures < self.cfg.failure_threshold:
                return None
            return f"bead:{bead}", f"bead {bead} has failed {failures} times (last: {verb})"
        if verb == Verb.directive_refused:
            return f"refused:{after.get('directive')}", (
                f"the mayor refused directive #{after.get('directive')} ({after.get('key')}): {after.get('note', '')}"
            )
        if verb == Verb.mail_sent and event.agent in (OPERATOR, self.me.name):
            return (
                f"mail:{after.get('message_id')}",
                f"mail from {event.actor} to {event.agent}: {after.get('subject', '')}",
            )
        if verb == Verb.budget_exhausted:
            scope, name = after.get("scope"), after.get("name")
            if scope == "agent" and name == Role.overseer.value:
                return None  # its own budget: the next wake-up stops it
            return f"budget:{scope}:{name}", f"the {scope} budget {name} is spent"
        return None

    def _at_start(self, steps: list[Step]) -> dict[str, str]:
        """Goals whose convoys all landed are achieved; on a first start, goals with no plan and no directive
        wake the model. A restarted loop reads what happened meanwhile after its kept cursor instead, so it
        does not review goals it already judged."""
        out = {}
        for goal in self.town.goal_list(self.me, "active", 50):
            if goal.convoys and all(c.landed for c in goal.convoys):
                for done in self.town.goals_landed(self.me, goal.convoys[-1].id):
                    steps.append(Step("achieved", f"goal {done.id}", done.reason))
            elif not goal.convoys and not goal.directives and not self._kept:
                out[f"goal:{goal.id}"] = f"goal {goal.id} is active with no plan: {goal.text[:200]}"
        return out

    def _goal_budgets(self) -> dict[str, str]:
        """A goal whose work crossed a threshold of its budget (usage rows are not events: looked at every
        `BUDGET_CHECK_SECONDS`). Thresholds crossed before the loop started are noted, not reported."""
        now = self.clock()
        if now - self._budgets_at < BUDGET_CHECK_SECONDS:
            return {}
        first, self._budgets_at = self._budgets_at == 0.0, now
        out = self._town_budgets(report=not first)
        for goal in self.town.goal_list(self.me, "active", 50):
            if not goal.budget_usd:
                continue
            crossed = max((t for t in THRESHOLDS if goal.spent_usd >= t * goal.budget_usd), default=0.0)
            if crossed > self._crossed.get(goal.id, 0.0):
                self._crossed[goal.id] = crossed
                if not first:
                    out[f"budget:goal:{goal.id}"] = (
                        f"goal {goal.id} has spent ${goal.spent_usd:.4f} of its ${goal.budget_usd:.4f} budget "
                        f"({crossed:.0%} crossed)"
                    )
        return out

    def _town_budgets(self, report: bool) -> dict[str, str]:
        """Town and rig budgets past WARN_SHARE of a limit but not yet spent (a spent one is an event of its
        own): each wakes it once, until the budget is raised or reset below the share again."""
        out = {}
        for b in self.town.budget(self.me):
            if b.scope.value not in ("town", "rig") or b.exhausted:
                continue
            shares = [b.tokens_spent / b.token_limit if b.token_limit else 0.0]
            shares.append(b.usd_spent / b.usd_limit if b.usd_limit else 0.0)
            subject = f"budget:{b.scope.value}:{b.name}:warn"
            if max(shares) < WARN_SHARE:
                self._warned.discard(subject)
            elif subject not in self._warned:
                self._warned.add(subject)
                if report:
                    out[subject] = (
                        f"the {b.scope.value} budget {b.name} is {max(shares):.0%} spent "
                        f"({WARN_SHARE:.0%} crossed; {b.usd_spent:.4f} of {b.usd_limit} USD, "
                        f"{b.tokens_spent} of {b.token_limit} tokens)"
                    )
        return out

    def _escalated(self, about: str) -> bool:
        return bool(self.town.directive_history(self.me, f"{DirectiveKind.escalate.value}:about={about}"))

    # -- deciding ----------------------------------------------------------------------------------
    def _decide(self, triggers: list[str]) -> list[Step]:
        summary = self.town.overseer_summary(self.me)
        self.tally.model_requests += 1
        try:
            answer = self.model.decide(summary, triggers)
        except BudgetExceeded:
            return self._stop("the gateway refused its request: its budget is spent")
        except Exception as exc:  # whatever the model client raised, the town goes on
            why = str(exc) if isinstance(exc, GastownError) else f"{type(exc).__name__}: {exc}"
            self.town.overseer_record(self.me, Verb.overseer_decided, {"triggers": triggers, "error": why[:2000]})
            return [Step("failed", "model", why)]
        steps: list[Step] = []
        issued: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        for proposed in answer.directives:
            step = self._issue(proposed)
            steps.append(step)
            entry = {"key": proposed.key(), "kind": proposed.kind.value, "why": step.reason}
            (issued if step.verb in ("issued", "escalated") else skipped).append(entry)
        self.town.overseer_record(
            self.me,
            Verb.overseer_decided,
            {
                "triggers": triggers,
                "summary": answer.summary,
                "issued": issued,
                "skipped": skipped,
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens,
            },
        )
        steps.append(Step("decided", f"{len(triggers)} triggers", answer.summary or f"{len(issued)} directives"))
        return steps

    def _issue(self, proposed: DirectiveIn) -> Step:
        """Issue one proposed directive, or say why not: already open, backing off, or escalated instead."""
        key = proposed.key()
        history = self.town.directive_history(self.me, key)
        if any(d.state.value in ("issued", "acknowledged") for d in history):
            return Step("skipped", key, "the same directive is still open")
        if proposed.kind is not DirectiveKind.escalate and len(history) >= self.cfg.max_attempts:
            return self._escalate_instead(proposed, history)
        if history:
            wait = self.cfg.backoff_seconds * 2 ** (len(history) - 1)
            ready_at = _epoch(history[-1].closed_at or history[-1].updated_at) + wait
            if self.clock() < ready_at:
                return Step(
                    "skipped", key, f"backing off: issued {len(history)} times; again after {now_iso(ready_at)}"
                )
        return self._give(proposed, attempts=len(history) + 1)

    def _escalate_instead(self, proposed: DirectiveIn, history: list[Directive]) -> Step:
        about = f"bead:{proposed.bead}" if proposed.bead else proposed.key()
        if self._escalated(about):
            return Step("skipped", proposed.key(), "already escalated to the human; backing off")
        question = (
            f"{proposed.kind.value} was directed {len(history)} times ({', '.join(f'#{d.id}' for d in history)}) "
            f"and the problem keeps coming back. Last reason: {proposed.reason} Decide what to do "
            + (f"with bead {proposed.bead}" if proposed.bead else "")
            + "; the overseer stops directing about it."
        )
        escalation = DirectiveIn(
            kind=DirectiveKind.escalate,
            about=about,
            question=question[:4000],
            reason=f"{proposed.key()} did not stick after {len(history)} attempts",
        )
        step = self._give(escalation, attempts=1)
        if step.verb == "issued":
            self.town.overseer_record(
                self.me, Verb.overseer_escalated, {"about": about, "key": proposed.key(), "attempts": len(history)}
            )
            return Step("escalated", about, escalation.reason)
        return step

    def _give(self, directive: DirectiveIn, attempts: int) -> Step:
        try:
            issued = self.town.directive_issue(self.me, directive, attempts=attempts)
        except Conflict as exc:
            return Step("skipped", directive.key(), str(exc))
        except GastownError as exc:
            return Step("skipped", directive.key(), f"not issued: {exc}")
        self.tally.issued.append(issued.id)
        return Step("issued", f"#{issued.id} {issued.key}", directive.reason)

    def _stop(self, why: str) -> list[Step]:
        """Stop directing (the town keeps working) and tell the operator, once."""
        self._stopped = True
        self.town.overseer_record(self.me, Verb.overseer_stopped, {"reason": why})
        self.town.tell_operator_once(
            self.me,
            "overseer-budget",
            "the overseer stopped directing: its budget is spent",
            f"The overseer loop stopped: {why}. The town keeps working (scheduler, merge queue, witness), but no "
            "new directives reach the mayor. Raise it with `gastown budget set agent overseer --usd N` and "
            "restart the town, or direct the mayor yourself (`gastown directive issue`).",
        )
        return [Step("stopped", "overseer", why)]
