"""The reconciler and scheduler: deterministic code in `gastown up` that turns recorded intent into containers.

Each `tick()` first dispatches (with `[scheduler] auto`): ready beads on each rig go to fresh polecats, by
priority then age, up to `max_polecats` for the town and the rig and `spawn_per_tick`. Then it carries out what
any surface asked for (a sling from stdio, a stop from the CLI, a request made while the town was down).
A rig whose launches keep failing trips a breaker: its dispatch pauses for a cool-down and the mayor is told
once, so a broken engine costs at most `breaker_failures` launches per window instead of a launch loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gastown_mcp.errors import GastownError
from gastown_mcp.models import Role
from gastown_mcp.town import Town, system_agent


@dataclass(frozen=True)
class Step:
    """One thing the reconciler did, for logs and tests."""

    verb: str  # dispatched, launched, stopped, failed, paused, resumed
    target: str
    reason: str


class Reconciler:
    def __init__(self, town: Town, *, clock: Callable[[], float] = time.time, name: str = "reconciler") -> None:
        self.town = town
        self.clock = clock
        self.me = system_agent(name, Role.mayor)
        self.cfg = town.settings.scheduler
        self._failures: dict[str, list[float]] = {}
        self._paused_until: dict[str, float] = {}
        self._held: dict[str, str] = {}  # rigs held back by their budget, with why

    def tick(self) -> list[Step]:
        steps = self._dispatch()
        for done in self.town.reconcile(self.me):
            steps.append(Step(done.verb, done.agent, done.detail))
            if done.verb == "failed" and done.rig:
                steps += self._failed(done.rig)
        return steps

    # -- the scheduler -----------------------------------------------------------------------------
    def _dispatch(self) -> list[Step]:
        steps: list[Step] = []
        hold = self.town.dispatch_hold()  # emergency stop, disk, or a storm of upstream rate limits
        if hold is not None:
            if self._held.get("*") != hold:
                steps.append(Step("held", "*", f"no dispatch: {hold}"))
            self._held["*"] = hold
            return steps
        self._held.pop("*", None)
        now = self.clock()
        alive = self.town.polecats_by_rig(self.me)
        total = sum(alive.values())
        budget = self.cfg.spawn_per_tick
        for rig in self.town.rig_list(self.me):
            rig_cfg = self.town.settings.rig(rig.name)
            if not (self.cfg.auto if rig_cfg.auto is None else rig_cfg.auto):
                continue
            if self._paused_until.get(rig.name, 0.0) > now:
                continue
            if rig.name in self._paused_until:
                del self._paused_until[rig.name]
                steps.append(Step("resumed", rig.name, "the breaker's cool-down is over"))
            control = self.town.rig_control(rig.name)  # what the overseer's directives changed
            if control.get("paused"):
                continue
            rig_max = self.cfg.max_polecats if rig_cfg.max_polecats is None else rig_cfg.max_polecats
            if control.get("max_polecats") is not None:
                rig_max = int(control["max_polecats"])
            # Launches of one tick run side by side, so at most as many as the breaker still allows to fail.
            allowance = self.cfg.breaker_failures - len(self._recent(rig.name, now))
            room = min(rig_max - alive.get(rig.name, 0), self.cfg.max_polecats - total, budget, allowance)
            if room <= 0:
                continue
            short = self.town.dispatch_room(self.me, rig.name)
            if short is not None:
                if self._held.get(rig.name) != short:  # said once per reason, not every tick
                    steps.append(Step("held", rig.name, f"no dispatch: {short}"))
                self._held[rig.name] = short
                continue
            self._held.pop(rig.name, None)
            for bead in self.town.ready_for_rig(self.me, rig.name, room):
                try:
                    polecat = self.town.request_polecat(self.me, bead.id, rig.name)
                except GastownError as exc:
                    steps.append(Step("failed", bead.id, f"dispatch to {rig.name}: {exc}"))
                    steps += self._failed(rig.name)
                    if rig.name in self._paused_until:
                        break
                    continue
                alive[rig.name] = alive.get(rig.name, 0) + 1
                total, budget = total + 1, budget - 1
                steps.append(Step("dispatched", bead.id, f"to {polecat.name} on {rig.name}"))
        return steps

    # -- the breaker -------------------------------------------------------------------------------
    def _recent(self, rig: str, now: float) -> list[float]:
        return [t for t in self._failures.get(rig, []) if now - t < self.cfg.breaker_window_seconds]

    def _failed(self, rig: str) -> list[Step]:
        now = self.clock()
        recent = [*self._recent(rig, now), now]
        self._failures[rig] = recent
        if len(recent) < self.cfg.breaker_failures or rig in self._paused_until:
            return []
        self._paused_until[rig] = now + self.cfg.breaker_cooldown_seconds
        self._failures[rig] = []
        minutes = self.cfg.breaker_cooldown_seconds / 60
        self.town.escalate(
            self.me,
            f"dispatch to {rig} paused: polecats cannot start",
            f"{len(recent)} polecat launches on rig {rig} failed within {self.cfg.breaker_window_seconds:.0f}s, "
            f"so the scheduler stopped starting polecats there for {minutes:.0f} minutes. Check the engine with "
            "`gastown doctor --sandbox` and the failed beads' notes; dispatch resumes by itself after the pause.",
        )
        return [Step("paused", rig, f"{len(recent)} failed launches; resumes in {minutes:.0f} min")]
