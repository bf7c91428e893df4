"""The witness: deterministic code that makes sure no work is dropped.

Each `tick()` looks at leases, containers, activity and budgets, acts through `Town`, and returns what it did.
It never stops an agent that is working: only expired leases, exited containers, spent budgets and idleness
(no tool call and no file change) trigger action, and idleness only nudges and escalates. A nudge waiting
for an agent whose session has ended (exit ok or failed) resumes that session with the nudge as its prompt.
A bead given back because its polecat died goes to a fresh polecat on the same rig (`respawn`), until its
attempts or a crash loop block it and the mayor is told.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from gastown_mcp.errors import GastownError
from gastown_mcp.follow import WorktreeActivity
from gastown_mcp.models import Agent, AgentState, BeadStatus, Role, Verb, now_iso
from gastown_mcp.runtime import ContainerStatus
from gastown_mcp.town import Town, system_agent

# Exits after which a nudge resumes the session; not after a stop, a kill, the wall clock, OOM or a budget.
RESUMABLE = ("ok", "failed")
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv"}


class Did(StrEnum):
    """What the witness can do, as its `Action.verb` (the events it causes are `models.Verb`s)."""

    requeued = "bead.requeued"
    respawned = "bead.respawned"
    blocked = "bead.blocked"
    skipped = "skip"
    exited = "agent.exited"
    stopped = "agent.stopped"
    nudged = "agent.nudged"
    stalled = "agent.stalled"
    active = "agent.active"
    resumed = "agent.resumed"
    resume_failed = "agent.resume_failed"
    model_failing = "agent.model_failing"


@dataclass(frozen=True)
class Action:
    """One thing the witness did, for logs and tests."""

    verb: Did
    target: str
    reason: str


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def latest_change(root: Path, budget: int = 20_000) -> float:
    """Newest mtime under `root` (skipping git metadata and caches), scanning at most `budget` entries."""
    newest = 0.0
    stack = [root]
    seen = 0
    while stack and seen < budget:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    newest = max(newest, st.st_mtime)
                    if entry.is_dir(follow_symlinks=False) and entry.name not in SKIP_DIRS:
                        stack.append(Path(entry.path))
        except OSError:
            continue
    return newest


class Witness:
    def __init__(
        self, town: Town, *, clock: Callable[[], float] = time.time, name: str = "witness", watch: bool = True
    ) -> None:
        self.town = town
        self.clock = clock
        self.me = system_agent(name, Role.witness)
        self.cfg = town.settings.witness
        # Worktree changes come from a file watch; a tree is walked only on the tick that starts watching it
        # (what changed before the watch began), or when it cannot be watched.
        self.activity = WorktreeActivity(clock) if watch else None
        self._walked: dict[str, float] = {}  # root -> newest mtime found by the walk that preceded its watch
        self._last_event = town.last_event_id(self.me)
        self._told: set[tuple[str, int]] = set()  # (agent, first failed usage row) streaks the mayor heard of

    # -- the loop ----------------------------------------------------------------------------------
    def tick(self) -> list[Action]:
        if self.town.frozen() is not None:
            return []  # emergency stop: no lease, idle or exit timer runs; nothing is judged while frozen
        actions: list[Action] = []
        actions += self._budgets()
        actions += self._containers()
        actions += self._resumes()
        actions += self._leases()
        actions += self._idle()
        actions += self._model_failures()
        return actions

    # -- checks ------------------------------------------------------------------------------------
    def _leases(self) -> list[Action]:
        out = []
        now = self.clock()
        for bead in self.town.expired_leases(self.me, now):
            holder = self._find(bead.assignee) if bead.assignee else None
            if holder is not None and holder.launching:
                continue  # nothing is judged dead before it has started; its launch renews the lease
            reason = f"lease expired: {bead.assignee} made no call in time"
            out += self._requeue(bead.id, reason, holder.rig if holder else None)
        return out

    def _containers(self) -> list[Action]:
        self.town.reap_expired(self.me)  # the host-side wall-clock backstop, for a container whose own timer failed
        running = self.town.containers(self.me)
        if running is None:
            return []
        out = []
        for agent in self._alive():
            if agent.metadata.get("container") is None or agent.state is AgentState.starting:
                continue  # not launched by the runtime (an external or operator-run agent), or not yet
            status = running.get(agent.name)
            if status is not None and status.state in ("running", "created"):
                continue
            if status is not None and status.generation < int(agent.metadata.get("generation") or 0):
                continue  # what an older run of this agent left behind says nothing about the current one
            reason = self._exit_reason(agent, status)
            out.append(self._mark_exited(agent, reason, status))
            for bead in self.town.held_by(self.me, agent.name):
                out += self._requeue(bead.id, f"container of {agent.name} exited ({reason})", agent.rig)
        return out

    def _resumes(self) -> list[Action]:
        out = []
        for agent in self.town.resumable_agents(self.me):  # exited with a nudge waiting: no scan of the dead
            if agent.metadata.get("exit_reason") not in RESUMABLE:
                continue
            if not agent.metadata.get("session_id"):
                continue
            try:
                resumed = self.town.resume_with_nudges(self.me, agent.name)
            except GastownError as exc:
                self.town.escalate(
                    self.me,
                    f"cannot resume {agent.name}",
                    f"{agent.name} has ended and was nudged, but resuming its session failed: {exc}.",
                )
                out.append(Action(Did.resume_failed, agent.name, str(exc)))
                continue
            if resumed is not None:
                nudges = resumed[1]
                out.append(Action(Did.resumed, agent.name, f"nudge #{nudges[-1].id} while its session had ended"))
        return out

    def _budgets(self) -> list[Action]:
        out = []
        events = self.town.events(self.me, after_id=self._last_event, limit=1000)
        if events:
            self._last_event = events[-1].id
        for event in events:
            if event.verb != Verb.budget_exhausted:
                continue
            after = event.after or {}
            scope, name = after.get("scope"), after.get("name")
            victims = [
                a
                for a in self._alive()
                if scope == "town" or (scope == "rig" and a.rig == name) or (scope == "agent" and a.name == name)
            ]
            for agent in victims:
                out += self._stop_for_budget(agent, f"{scope} budget {name} exhausted")
        # Events can be missed (a budget lowered below what was spent, a witness started later): check state too.
        for agent in self._alive():
            spent = self.town.spent_budgets(self.me, agent)
            if spent:
                out += self._stop_for_budget(agent, f"{spent[0].scope.value} budget {spent[0].name} exhausted")
        return out

    def _stop_for_budget(self, agent: Agent, why: str) -> list[Action]:
        out = []
        self.town.halt(self.me, agent.name, why, exit_reason="budget")
        out.append(Action(Did.stopped, agent.name, why))
        for bead in self.town.held_by(self.me, agent.name):
            self.town.block(self.me, bead.id, f"{why}; raise the budget and unblock to continue")
            out.append(Action(Did.blocked, bead.id, why))
            self.town.escalate(
                self.me,
                f"budget exhausted: {agent.name} stopped, {bead.id} blocked",
                f"{why}. {agent.name} was stopped while working {bead.id}; the bead is blocked with its branch "
                "kept. Raise the budget (`gastown budget set`) and unblock the bead to continue.",
            )
        return out

    def close(self) -> None:
        """Stop watching worktrees (the loop that ticks this witness is ending)."""
        if self.activity is not None:
            self.activity.close()

    def _idle(self) -> list[Action]:
        out = []
        limit = self.cfg.idle_seconds
        working = [
            a for a in self._alive() if a.state is not AgentState.starting and a.role is Role.polecat
        ]  # only agents with work on their hook are expected to keep moving
        self._watch([str(a.metadata["worktree"]) for a in working if a.metadata.get("worktree")])
        now = self.clock()
        for agent in working:
            last = max(
                _epoch(agent.last_seen) or _epoch(agent.created_at) or now,
                self._worktree_change(agent),
                float(agent.metadata.get("nudged_at", 0.0)) if agent.state is AgentState.running else 0.0,
                float(agent.metadata.get("resumed_at") or 0.0),
            )
            quiet = now - last
            if quiet < limit:
                if agent.state in (AgentState.nudged, AgentState.stalled, AgentState.idle):
                    self.town.set_agent_state(self.me, agent.name, AgentState.running, "active again")
                    out.append(Action(Did.active, agent.name, "activity seen"))
                continue
            if agent.state is AgentState.running:
                text = (
                    f"You have made no tool call and changed no file for {int(quiet)}s. Continue your bead, "
                    "or release it with bead_release and a reason if you are stuck."
                )
                self.town.nudge(self.me, agent.name, text)
                self.town.set_agent_state(self.me, agent.name, AgentState.nudged, "idle", nudged_at=now)
                out.append(Action(Did.nudged, agent.name, f"idle {int(quiet)}s"))
            elif agent.state is AgentState.nudged and now - float(agent.metadata.get("nudged_at", now)) >= limit:
                self.town.set_agent_state(self.me, agent.name, AgentState.stalled, "idle after a nudge")
                held = ", ".join(b.id for b in self.town.held_by(self.me, agent.name)) or "no bead"
                self.town.escalate(
                    self.me,
                    f"{agent.name} is stalled",
                    f"{agent.name} made no tool call and changed no file for {int(quiet)}s, even after a nudge. "
                    f"It holds {held}. Stop it (`gastown agent stop`) or nudge it yourself.",
                )
                out.append(Action(Did.stalled, agent.name, f"idle {int(quiet)}s after a nudge"))
        return out

    def _model_failures(self) -> list[Action]:
        """An agent whose last N model calls all failed (no key, upstream down, refused) is retrying in vain:
        tell the mayor once per run of failures, with the last error and what to do."""
        out = []
        alive = {a.name for a in self._alive()}
        for failing in self.town.model_errors(self.me):
            streak = (failing.agent, failing.first_id)
            if failing.agent not in alive or failing.failures < self.cfg.model_failures or streak in self._told:
                continue
            self._told.add(streak)
            self.town.escalate(
                self.me,
                f"{failing.agent}: {failing.failures} model calls failed in a row",
                f"{failing.agent}'s last {failing.failures} model calls through the gateway failed (upstream "
                f"{failing.upstream or '-'}, model {failing.model}); the last one: {failing.error}. Fix the upstream "
                "(`gastown route list` shows where each model goes and whether its key is set), route the model "
                "elsewhere (`gastown route add`), or stop the agent (`gastown agent stop`).",
            )
            out.append(Action(Did.model_failing, failing.agent, f"{failing.failures} failed model calls"))
        return out

    # -- helpers -----------------------------------------------------------------------------------
    def _alive(self) -> list[Agent]:
        return [a for a in self.town.alive_agents(self.me) if a.role is not Role.witness]

    def _find(self, name: str) -> Agent | None:
        try:
            return self.town.agent(name)
        except GastownError:
            return None

    def _requeue(self, bead_id: str, reason: str, rig: str | None = None) -> list[Action]:
        recent = self._recent_failures(bead_id)
        try:
            if recent + 1 >= self.cfg.crash_loop_failures:
                why = f"{reason}; {recent + 1} failures within {int(self.cfg.crash_loop_window_seconds)}s"
                bead = self.town.requeue(self.me, bead_id, reason)
                if bead.status is BeadStatus.open:
                    bead = self.town.block(self.me, bead_id, f"crash loop: {why}")
            else:
                bead = self.town.requeue(self.me, bead_id, reason)
        except GastownError as exc:  # someone else moved it first: nothing is lost
            return [Action(Did.skipped, bead_id, str(exc))]
        if bead.status is BeadStatus.blocked:
            self.town.escalate(
                self.me,
                f"{bead_id} blocked after {bead.attempts} failed attempts",
                f"{bead_id} ({bead.title}) failed {bead.attempts} times; last: {reason}. Its branches are kept. "
                "Rewrite or split the bead, then unblock it (`bead_update status=open`).",
            )
            return [Action(Did.blocked, bead_id, reason)]
        return [Action(Did.requeued, bead_id, reason), *self._respawn(bead_id, rig)]

    def _respawn(self, bead_id: str, rig: str | None) -> list[Action]:
        """Sling a requeued bead to a fresh polecat on the rig it was worked in (its branch is kept)."""
        if not self.cfg.respawn or rig is None or not self.town.has_fleet:
            return []
        full = self._no_slot(rig)
        if full is not None:  # the scheduler (or a mayor's sling) starts it when a slot frees up
            return [Action(Did.skipped, bead_id, f"no respawn on {rig}: {full}; the bead waits in the queue")]
        try:
            polecat = self.town.sling(self.me, bead_id, rig)
        except GastownError as exc:  # slung or claimed by someone else first, or the rig is gone: nothing lost
            with contextlib.suppress(GastownError):
                if self.town.bead_show(self.me, bead_id).status is BeadStatus.blocked:
                    return [Action(Did.blocked, bead_id, f"respawn on {rig} failed: {exc}")]  # mayor mailed
            return [Action(Did.skipped, bead_id, f"respawn on {rig}: {exc}")]
        return [Action(Did.respawned, bead_id, f"slung to {polecat.name} on {rig}")]

    def _no_slot(self, rig: str) -> str | None:
        """Why a respawn on `rig` would exceed the scheduler's `max_polecats` (town or rig), or None."""
        alive = self.town.polecats_by_rig(self.me)
        town_max = self.town.settings.scheduler.max_polecats
        rig_max = self.town.settings.rig(rig).max_polecats
        if sum(alive.values()) >= town_max:
            return f"{sum(alive.values())} polecats run in the town ([scheduler] max_polecats = {town_max})"
        if rig_max is not None and alive.get(rig, 0) >= rig_max:
            return f"{alive.get(rig, 0)} polecats run on {rig} ([rigs.{rig}] max_polecats = {rig_max})"
        return None

    def _recent_failures(self, bead_id: str) -> int:
        since = now_iso(self.clock() - self.cfg.crash_loop_window_seconds)
        return sum(
            1
            for e in self.town.events(self.me, bead_id=bead_id, limit=1000)
            if e.actor == self.me.name and e.verb in (Verb.bead_released, Verb.bead_blocked) and e.at >= since
        )

    def _watch(self, roots: list[str]) -> None:
        if self.activity is None:
            return
        fresh = [r for r in roots if r not in self._walked]
        for root in fresh:  # before the watch starts: a change made after the walk is seen by the watch
            self._walked[root] = latest_change(Path(root)) if Path(root).is_dir() else 0.0
        for root in set(self._walked) - set(roots):
            del self._walked[root]
        self.activity.watch(r for r in roots if r not in fresh or Path(r).is_dir())

    def _worktree_change(self, agent: Agent) -> float:
        path = agent.metadata.get("worktree")
        if not path:
            return 0.0
        seen = self.activity.last_change(path) if self.activity is not None else None
        if seen is not None:
            return max(seen, self._walked.get(path, 0.0))
        return latest_change(Path(path)) if Path(path).is_dir() else 0.0  # not watched: walk it

    def _exit_reason(self, agent: Agent, status: ContainerStatus | None) -> str:
        if status is None or status.state == "missing":
            return "container gone"
        return status.reason or "failed"

    def _mark_exited(self, agent: Agent, reason: str, status: ContainerStatus | None) -> Action:
        code = status.exit_code if status is not None else None
        self.town.agent_exited(self.me, agent.name, reason, code)
        return Action(Did.exited, agent.name, reason)
