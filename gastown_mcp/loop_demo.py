"""`make demo`: the seed's loop end to end, from an operator's goal to merged work on `main`.

The operator states a goal -> the overseer (a model loop in `gastown up`) directs the mayor -> the mayor
(Claude Code in its own container, no worktree) plans it with the refinery (`plan_create`) -> the scheduler
dispatches the ready beads to polecats (Claude Code in containers) -> the deacon runs each bead's verify commands
and the merge queue lands it on `main` after the rig's gates -> the convoy lands -> the overseer marks the goal
achieved. Every hand-off is read back from the town's events. Without ANTHROPIC_API_KEY the scripted stand-in
plays every model (overseer, mayor, refinery, deacon, polecats) and the demo says so; with it, they are real.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from gastown_mcp import assemble
from gastown_mcp.config import (
    OverseerSection,
    RigSection,
    SchedulerSection,
    Settings,
)
from gastown_mcp.daemon import TownProcess
from gastown_mcp.factory_demo import (
    GATES,
    RIG,
    _requests_table,
    _sample_rig,
    exit_code,
    pick_model,
    run_in_town,
    start_engine,
)
from gastown_mcp.factory_demo import _settings as factory_settings
from gastown_mcp.models import Event, Verb
from gastown_mcp.town import Town, operator
from gastown_mcp.town.goals import Goal, RoleUsage

GOAL = "Document the sample project: a contributing guide, usage notes, a changelog entry and a note in NOTES.md"
SLOTS = 3
DEADLINE_S = 270.0  # the demo gives up (and says where it stopped) well inside five minutes
# The hand-offs of the loop, in order, as the events that show each one.
HANDOFFS: list[tuple[str, Verb, Callable[[Event], bool]]] = [
    ("operator states the goal", Verb.goal_added, lambda e: True),
    ("overseer decides", Verb.overseer_decided, lambda e: bool((e.after or {}).get("issued"))),
    ("overseer directs the mayor", Verb.directive_issued, lambda e: e.agent == "mayor"),
    ("the directive wakes the mayor (resumed)", Verb.agent_running, lambda e: _resumed(e, "mayor")),
    ("mayor takes the directive", Verb.directive_acknowledged, lambda e: e.actor == "mayor"),
    ("refinery plans: a convoy of beads", Verb.plan_created, lambda e: e.actor == "mayor"),
    ("mayor reports the plan", Verb.directive_done, lambda e: e.actor == "mayor"),
    ("scheduler starts a polecat", Verb.agent_created, lambda e: (e.after or {}).get("role") == "polecat"),
    ("polecat claims a bead", Verb.bead_claimed, lambda e: True),
    ("polecat completes it", Verb.bead_completed, lambda e: True),
    ("deacon's verify commands pass", Verb.verify_passed, lambda e: True),
    ("merge queue lands it on main", Verb.merge_merged, lambda e: True),
    ("convoy lands", Verb.convoy_landed, lambda e: True),
    ("overseer marks the goal achieved", Verb.goal_achieved, lambda e: e.actor == "overseer"),
]


def _resumed(event: Event, agent: str) -> bool:
    return event.agent == agent and (event.after or {}).get("reason") == "resumed"


@dataclass
class LoopResult:
    ok: bool = False
    seconds: float = 0.0
    goal_seconds: float = 0.0  # from the goal added to the goal achieved
    goal: Goal | None = None
    plan: list[tuple[str, str, str]] = field(default_factory=list)  # bead id, title, state
    main: list[str] = field(default_factory=list)
    roles: list[RoleUsage] = field(default_factory=list)
    handoffs: list[tuple[str, Event | None]] = field(default_factory=list)
    mayor_resumed: bool = False  # its ended session was resumed with the directive
    mayor_command: list[str] = field(default_factory=list)  # its container's command (Claude Code's arguments)
    overseer_ticks: int = 0
    overseer_requests: int = 0
    verified: int = 0  # beads the deacon ran verify commands for
    verified_first_time: int = 0  # ... whose first verify run passed
    model: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def steering_share(self) -> float:
        """Overseer and mayor tokens as a share of the whole run's."""
        return sum(r.share for r in self.roles if r.role in ("overseer", "mayor"))


def _settings(town_dir: Path, name: str, upstream: dict[str, Any], default: str) -> Settings:
    """The factory demo's town, with the scheduler dispatching on its own and the overseer loop on."""
    factory = factory_settings(town_dir, name, upstream, default, rig=RigSection(gates=GATES))
    return factory.model_copy(
        update={
            "scheduler": SchedulerSection(auto=True, max_polecats=SLOTS, interval_seconds=0.5),
            "overseer": OverseerSection(enabled=True, interval_seconds=0.5, budget_usd=2.0),
        }
    )


def _board(town: Town, goal_id: int | None, elapsed: float) -> Group:
    op = operator()
    g = Table("goal", "state", "convoys", "directives", title=f"the loop ({elapsed:.0f}s)")
    goal = town.goal_show(op, goal_id) if goal_id else None
    if goal is not None:
        convoys = ", ".join(f"{c.id} {c.progress['merged']}/{sum(c.progress.values())} merged" for c in goal.convoys)
        directives = ", ".join(f"#{d.id} {d.kind.value} {d.state.value}" for d in town.directive_list(op, limit=5))
        g.add_row(f"{goal.id} {goal.text[:60]}", goal.state.value, convoys, directives)
    a = Table("agent", "role", "state", "hook", title="agents")
    for agent in town.agents(op):
        if agent.role.value in ("mayor", "polecat"):
            a.add_row(agent.name, agent.role.value, agent.state.value, str(agent.metadata.get("hook", "")))
    beads = Table("bead", "title", "status", title="the plan")
    for c in goal.convoys if goal else []:
        for b in town.convoy_show(op, c.id).beads:
            color = {"merged": "green", "in_progress": "yellow", "blocked": "red"}.get(b.state, "white")
            beads.add_row(b.id, b.title, f"[{color}]{b.state}[/]")
    return Group(g, a, beads, _requests_table(town.merge_list(op, rig=RIG, limit=100)))


async def _loop(process: TownProcess, console: Console, started: float, live: bool) -> LoopResult:
    town = process.town
    assert town is not None
    op = operator()
    result = LoopResult()
    # The mayor: Claude Code in its own container. No directive waits yet, so it ends without a model call
    # (an idle mayor costs nothing); the directive will reach it as a nudge that resumes it.
    town.mayor_start(op)
    with anyio.move_on_after(60):
        while town.agent("mayor").state.value != "exited":
            await anyio.sleep(0.2)
    goal = town.goal_add(op, GOAL, rig=RIG)
    goal_at = time.monotonic()
    with Live(console=console, refresh_per_second=4, transient=not live) as board:
        while time.monotonic() - started < DEADLINE_S:
            if live:
                board.update(_board(town, goal.id, time.monotonic() - started))
            shown = town.goal_show(op, goal.id)
            if shown.state.value != "active":
                break
            await anyio.sleep(0.5)
        if live:
            board.update(_board(town, goal.id, time.monotonic() - started))
    result.goal = town.goal_show(op, goal.id)
    result.goal_seconds = time.monotonic() - goal_at
    events = town.events(op, limit=100_000)
    result.handoffs = [(w, next((e for e in events if e.verb == v and test(e)), None)) for w, v, test in HANDOFFS]
    result.mayor_resumed = any(e.verb == Verb.agent_running and _resumed(e, "mayor") for e in events)
    result.mayor_command = [str(c) for c in town.agent("mayor").metadata.get("command") or []]
    first_verify: dict[str, str] = {}
    for e in events:  # oldest first
        if e.verb in (Verb.verify_passed, Verb.verify_failed) and e.bead_id:
            first_verify.setdefault(e.bead_id, e.verb)
    result.verified = len(first_verify)
    result.verified_first_time = sum(v == Verb.verify_passed for v in first_verify.values())
    for c in result.goal.convoys:
        result.plan += [(b.id, b.title, b.state) for b in town.convoy_show(op, c.id).beads]
    result.main = town.rig_log(op, RIG, limit=50)
    result.roles = town.usage_by_role(op)
    if process.overseer is not None:
        result.overseer_ticks = process.overseer.tally.ticks
        result.overseer_requests = process.overseer.tally.model_requests
    missing = [what for what, event in result.handoffs if event is None]
    result.problems += [f"no event shows: {what}" for what in missing]
    if result.goal.state.value != "achieved":
        result.problems.append(f"the goal is {result.goal.state.value} after {result.goal_seconds:.0f}s")
        mail = town.inbox(op, unread_only=False, limit=10)
        result.problems += [f"mail to the operator: {m.subject}" for m in mail]
    result.ok = not result.problems
    return result


def _summary(console: Console, result: LoopResult) -> None:
    goal = result.goal
    if goal is not None:
        console.print(f"[bold]goal {goal.id}:[/] {escape(goal.text)} -> [bold]{goal.state.value}[/]")
        if goal.reason:
            console.print(f"  {escape(goal.reason)}", highlight=False)
    h = Table("hand-off", "first event", "at", title="the loop, hand-off by hand-off (from the town's events)")
    for what, event in result.handoffs:
        h.add_row(what, event.verb if event else "[red]missing[/]", event.at[11:23] if event else "")
    console.print(h)
    p = Table("bead", "title", "state", title="the plan (refinery)")
    for bead_id, title, state in result.plan:
        p.add_row(bead_id, title, state)
    console.print(p)
    c = Table("commits on main, newest first", title="main")
    for subject in result.main:
        c.add_row(escape(subject))
    console.print(c)
    u = Table("role", "agents", "requests", "tokens", "USD", "share of tokens", title="model usage by role")
    for r in result.roles:
        u.add_row(r.role, str(r.agents), str(r.requests), f"{r.tokens:,}", f"${r.cost_usd:.4f}", f"{r.share:.1%}")
    console.print(u)
    mayor = next((r for r in result.roles if r.role == "mayor"), None)
    if mayor is not None and mayor.requests:
        console.print(
            f"mayor: {mayor.requests} requests, {mayor.tokens // mayor.requests:,} tokens each on average "
            "(Claude Code with the town's tools only and its own short system prompt)"
        )
    console.print(
        f"overseer: {result.overseer_requests} model requests in {result.overseer_ticks} ticks "
        f"(an idle tick costs none); overseer + mayor: {result.steering_share:.1%} of all tokens; "
        f"mayor woken by the directive: {'yes' if result.mayor_resumed else 'no'}; "
        f"verify commands passed the first time for {result.verified_first_time} of {result.verified} beads"
    )
    verdict = "[bold green]goal achieved: the work is on main[/]" if result.ok else "[bold red]the loop stopped[/]"
    console.print(
        f"{verdict} in {result.goal_seconds:.1f}s from goal to achieved ({result.seconds:.1f}s in all; {result.model})"
    )
    for problem in result.problems:
        console.print(f"[red]-[/] {escape(problem)}", highlight=False)


def run_loop(console: Console | None = None, *, build: bool = True, live: bool = True) -> LoopResult:
    """Run the whole loop once (Docker needed) and print its summary."""
    console = console or Console()
    started = time.monotonic()
    engine = start_engine(console, build)
    with contextlib.ExitStack() as stack:
        from gastown_mcp.standin.app import build_standin
        from gastown_mcp.standin.overseer import loop_models

        upstream, default, env, model = pick_model(stack, lambda: build_standin(loop_models()).app, "every model")
        console.print(f"[bold]model:[/] {model}")
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gastown-loop-")))
        name = f"loop{os.getpid() % 100000}"
        settings = _settings(root / "town", name, upstream, default)
        with contextlib.closing(assemble.open_town(settings)) as setup:
            setup.rig_add(operator(), RIG, str(_sample_rig(root)))
        process = TownProcess(settings, env, engine, on_status=lambda s: None, teardown=True)
        result = run_in_town(process, console, lambda: _loop(process, console, started, live))
        result.model = model
        result.seconds = time.monotonic() - started
    _summary(console, result)
    return result


def main() -> int:
    return exit_code(run_loop)


if __name__ == "__main__":
    sys.exit(main())
