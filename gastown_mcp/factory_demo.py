"""`make demo-factory`: the factory running for real (`make demo` runs the whole loop, `loop_demo.py`).

Builds the agent image if needed, starts a town (MCP server, gateway, witness, merge queue, Docker runtime) and
adds a small sample rig whose gate is its unittest suite. The mayor, a real MCP client with its own token, plans
8 beads (some dependent, two that append to the same file) and slings ready ones to the rig, at most 3 polecats
at a time; each polecat is Claude Code in its own hardened container, talking to the town over MCP and to the
model through the gateway. The merge queue lands each hand-in on main after the gates pass; of the two beads
that change the same file one lands and the other is handed back and lands after a second polecat rebases it.
With ANTHROPIC_API_KEY set the gateway forwards to Anthropic; without it the scripted stand-in plays the model.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from gastown_mcp import assemble, serving
from gastown_mcp.config import (
    GatewaySection,
    LeaseSection,
    RigSection,
    RuntimeSection,
    ServerSection,
    Settings,
    TownSection,
    WitnessSection,
)
from gastown_mcp.daemon import TownProcess
from gastown_mcp.errors import GastownError
from gastown_mcp.models import OPEN_MERGE_STATES, BeadStatus, MergeRequest, MergeState, Verb
from gastown_mcp.server.client import connect_http, result_text
from gastown_mcp.town import Town, operator

if TYPE_CHECKING:
    from gastown_mcp.runtime.protocol import Runtime


class Planned(NamedTuple):
    key: str
    title: str
    deps: list[str]
    file: str = ""  # a file the bead changes, shared with other beads; "" = a file of its own


RIG = "sample"
SHARED = "NOTES.md"
GATES = ["python3 -m unittest -q"]  # the sample rig's test suite, run by the merge queue before each landing
DEMO_RIG = RigSection(gates=GATES)  # batches of up to 4; a request that clashes with a batch mate waits a round
# The first two append to the same file and are slung together, so both start from the same main: one lands,
# the other conflicts, is handed back, and lands after a second polecat rebases it.
PLAN = [
    Planned("n1", "Note in NOTES.md what greet() returns", [], SHARED),
    Planned("n2", "Note in NOTES.md how to run the tests", [], SHARED),
    Planned("a", "Add a CONTRIBUTING guide", []),
    Planned("b", "Document the greet() function", []),
    Planned("c", "Add a .editorconfig", []),
    Planned("d", "Add a CHANGELOG entry for the guide", ["a"]),
    Planned("e", "Add usage examples to the README", ["b"]),
    Planned("f", "Write release notes", ["d", "e"]),
]
SLOTS = 3
R = TypeVar("R")


@dataclass
class FactoryResult:
    ok: bool
    seconds: float
    beads: dict[str, str] = field(default_factory=dict)
    main: list[str] = field(default_factory=list)  # subjects on the rig's main, newest first
    merged: int = 0  # beads whose commit is on main
    usage: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    double_worked: int = 0  # beads claimed more often than they were handed back, or taken over (must be 0)
    problems: list[str] = field(default_factory=list)  # sling errors and the mayor's mail, shown on failure
    requests: list[MergeRequest] = field(default_factory=list)  # the rig's merge requests, oldest first
    gates: list[str] = field(default_factory=list)  # the rig's gate commands
    main_gates: str = ""  # the gates run once more on main's tree at the end: "passed" or what failed
    shared: str = ""  # the shared file (SHARED) as it is on main

    @property
    def handed_back(self) -> list[MergeRequest]:
        """Requests the merge queue gave back because they conflicted with main."""
        return [r for r in self.requests if r.state is MergeState.conflicted]

    @property
    def reworked(self) -> set[str]:
        """Beads handed back on a conflict whose later request landed."""
        landed = {r.bead_id for r in self.requests if r.state is MergeState.merged}
        return {r.bead_id for r in self.handed_back} & landed

    @property
    def ungated(self) -> list[MergeRequest]:
        """Landed requests that went through no gate run (must be none when the rig has gates)."""
        return [r for r in self.requests if r.state is MergeState.merged and r.gate_runs < 1]


def _sample_rig(root: Path) -> Path:
    repo = root / "sample"
    repo.mkdir()
    (repo / "README.md").write_text("# sample\n\nA tiny project the demo's polecats work on.\n")
    (repo / "greet.py").write_text('def greet(name: str) -> str:\n    return f"hello, {name}"\n')
    (repo / "test_greet.py").write_text(TEST_GREET)
    (repo / SHARED).write_text("# Notes\n\nOne line per bead that adds a note:\n\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@gastown.local",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@gastown.local",
    }
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "."], ["git", "commit", "-qm", "initial"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    return repo


TEST_GREET = """import unittest

from greet import greet


class GreetTest(unittest.TestCase):
    def test_greet_says_hello_to_the_name(self):
        self.assertEqual(greet("town"), "hello, town")

    def test_greet_keeps_the_name_as_given(self):
        self.assertEqual(greet("Gas Town"), "hello, Gas Town")


if __name__ == "__main__":
    unittest.main()
"""


def _description(item: Planned) -> str:
    if not item.file:
        return f"{item.title}. Keep it short; commit on your branch."
    # `file:` is the line the scripted stand-in reads; a real model reads the sentence.
    return (
        f"{item.title}: append one line naming this bead to {item.file} (other beads add lines to it too). "
        f"Keep it short; commit on your branch.\nfile: {item.file}"
    )


def _standin_app() -> Any:
    from gastown_mcp.standin.app import build_standin
    from gastown_mcp.standin.scripts import script_named

    return build_standin(script_named("polecat")).app


def _settings(
    town_dir: Path,
    name: str,
    upstream: dict[str, Any],
    default: str,
    runtime: RuntimeSection | None = None,
    rig: RigSection | None = None,
) -> Settings:
    town_dir.mkdir(parents=True)
    return Settings(
        town_dir=town_dir,
        town=TownSection(name=name, prefix="gt"),
        lease=LeaseSection(seconds=300),
        server=ServerSection(port=0),
        gateway=GatewaySection(port=0, upstreams=upstream, default_upstream=default),
        witness=WitnessSection(interval_seconds=1.0, idle_seconds=120),
        runtime=runtime or RuntimeSection(),
        rigs={RIG: rig or RigSection()},
    )


async def _factory(
    process: TownProcess,
    console: Console,
    started: float,
    plan: list[Planned],
    slots: int,
    live: bool = True,
) -> FactoryResult:
    town = process.town
    assert town is not None and process.state is not None
    op = operator()
    creds = town.agent_add(op, "mayor", "mayor")
    ids: dict[str, str] = {}
    async with connect_http(process.state.mcp_url, creds.token) as mayor:
        for item in plan:
            res = await mayor.call_tool(
                "bead_create",
                {
                    "title": item.title,
                    "description": _description(item),
                    "acceptance": "a file with the change is committed on the polecat's branch",
                    "blocked_by": [ids[d] for d in item.deps],
                },
            )
            assert res.structured_content is not None, res.content
            ids[item.key] = res.structured_content["id"]
        sling_errors: list[str] = []
        with Live(console=console, refresh_per_second=4, transient=not live) as board:
            while True:
                beads = {b: town.bead_show(op, b) for b in ids.values()}
                agents = town.agents(op, "polecat")
                busy = [a for a in agents if a.state.alive]
                if live:
                    requests = town.merge_list(op, rig=RIG, limit=500)
                    board.update(_board(beads, agents, requests, time.monotonic() - started))
                if all(b.status is BeadStatus.done and not b.awaiting_merge for b in beads.values()):
                    break  # finished means on main, not "said done"
                if any(b.status is BeadStatus.blocked for b in beads.values()):
                    break
                ready = await mayor.call_tool("bead_ready", {"limit": max(10, slots)})
                for row in (ready.structured_content or {}).get("beads", [])[: max(0, slots - len(busy))]:
                    if row["id"] in ids.values() and row["status"] == "open":
                        slung = await mayor.call_tool("town_sling", {"bead": row["id"], "to": RIG})
                        if slung.is_error and (text := result_text(slung)) not in sling_errors:
                            sling_errors.append(text)
                await anyio.sleep(0.5)
        console.print()
        usage = await mayor.call_tool("town_usage", {})
    main = town.rig_log(op, RIG, limit=50)
    final = {b: town.bead_show(op, b) for b in ids.values()}
    statuses = {b: bead.status.value for b, bead in final.items()}
    merged = sum(1 for bead in final.values() if bead.status is BeadStatus.done and not bead.awaiting_merge)
    events = town.events(op, limit=100_000)
    claims = [e.bead_id for e in events if e.verb in (Verb.bead_claimed, Verb.bead_taken_over)]
    handbacks = [e.bead_id for e in events if e.verb in (Verb.merge_conflicted, Verb.merge_failed, Verb.merge_rejected)]
    # A bead handed back by the merge queue is rightly claimed again, once per hand-back.
    double = sum(1 for b in ids.values() if claims.count(b) > 1 + handbacks.count(b))
    requests = sorted(town.merge_list(op, rig=RIG, limit=500), key=lambda r: r.id)
    gates = town.settings.rig(RIG).gates
    main_gates = ""
    if merged == len(final) and gates and not any(r.state in OPEN_MERGE_STATES for r in requests):
        main_gates = await anyio.to_thread.run_sync(_gates_on_main, town)
    inbox = town.inbox(town.agent("mayor"), unread_only=False, limit=20)
    mail = [f"mail to the mayor: {m.subject}" for m in reversed(inbox)]
    result = FactoryResult(
        ok=False,
        merged=merged,
        double_worked=double,
        seconds=time.monotonic() - started,
        beads=statuses,
        main=main,
        usage=(usage.structured_content or {}).get("agents", []),
        problems=mail + [f"the last sling failed: {e}" for e in sling_errors[-1:]],
        requests=requests,
        gates=gates,
        main_gates=main_gates,
        shared=_show_on_main(town, SHARED),
    )
    gated = not gates or (main_gates == "passed" and not result.ungated)
    result.ok = merged == len(final) and double == 0 and gated
    if merged == len(final) and not gated:
        result.problems.append(f"main's gates: {main_gates or 'not run'}; landed without a gate run: {result.ungated}")
    return result


def _gates_on_main(town: Town) -> str:
    """Run the rig's gates once more, on main's tree as it is at the end, the way the merge queue runs them."""
    op = operator()
    candidate = town.merge_candidate(op, RIG, town.merge_main(op, RIG), [])
    gate = town.merge_gates(op, RIG, candidate)
    return "passed" if gate.passed else f"failed: {gate.log_tail[-500:]}"


def _show_on_main(town: Town, path: str) -> str:
    repo = next(r.repo for r in town.rig_list(operator()) if r.name == RIG)
    done = subprocess.run(["git", "-C", repo, "show", f"main:{path}"], capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else ""


def _board(beads: dict[str, Any], agents: list[Any], requests: list[MergeRequest], elapsed: float) -> Group:
    t = Table("bead", "title", "status", "polecat", title=f"beads ({elapsed:.0f}s)")
    for b in beads.values():
        color = {"done": "green", "in_progress": "yellow", "blocked": "red"}.get(b.status.value, "white")
        status = "awaiting merge" if b.awaiting_merge else b.status.value
        t.add_row(b.id, b.title, f"[{color}]{status}[/]", b.assignee or "")
    a = Table("polecat", "state", "hook", "exit", title="polecats")
    for agent in agents:
        a.add_row(
            agent.name,
            agent.state.value,
            str(agent.metadata.get("hook", "")),
            str(agent.metadata.get("exit_reason", "")),
        )
    return Group(t, a, _requests_table(requests))


def _requests_table(requests: list[MergeRequest]) -> Table:
    m = Table("request", "bead", "polecat", "state", "gate runs", "detail", title="merge queue")
    for r in sorted(requests, key=lambda r: r.id):
        color = {"merged": "green", "conflicted": "yellow", "failed": "red", "rejected": "red"}.get(r.state, "white")
        m.add_row(str(r.id), r.bead_id, r.agent, f"[{color}]{r.state.value}[/]", str(r.gate_runs), escape(r.detail))
    return m


def _summary(console: Console, result: FactoryResult) -> None:
    t = Table("agent", "requests", "input", "output", "cache write", "cache read", "USD", title="model usage")
    for u in result.usage:
        t.add_row(
            u["agent"],
            str(u["requests"]),
            f"{u['input_tokens']:,}",
            f"{u['output_tokens']:,}",
            f"{u['cache_creation_tokens']:,}",
            f"{u['cache_read_tokens']:,}",
            f"${u['cost_usd']:.4f}",
        )
    console.print(t)
    c = Table("commits on main, newest first", title="main after the merge queue")
    for subject in result.main:
        c.add_row(subject)
    console.print(c)
    for line in _merge_lines(result):
        console.print(escape(line), highlight=False)
    verdict = "[bold green]all beads merged on main[/]" if result.ok else "[bold red]not every bead reached main[/]"
    console.print(f"{verdict}: {result.merged}/{len(result.beads)} in {result.seconds:.1f}s ({result.model})")
    if not result.ok:
        for problem in result.problems:
            console.print(f"[red]-[/] {escape(problem)}", highlight=False)


def _merge_lines(result: FactoryResult) -> list[str]:
    """What the merge queue did, stated only as far as the requests and the final gate run show it."""
    landed = [r for r in result.requests if r.state is MergeState.merged]
    gates = ", ".join(f"`{g}`" for g in result.gates) or "no gates configured"
    gated = "every one" if not result.ungated else f"{len(landed) - len(result.ungated)} of them"
    lines = [
        f"merge queue: {len(landed)} requests landed on main, {gated} after a passing gate run ({gates}; "
        f"{sum(r.gate_runs for r in landed)} gate runs)"
    ]
    for r in result.handed_back:
        later = next((m for m in landed if m.bead_id == r.bead_id), None)
        after = f"landed with request {later.id} by {later.agent}" if later else "has not landed"
        lines.append(f"handed back: request {r.id} ({r.bead_id} by {r.agent}, {r.detail}); the bead {after}")
    if result.main_gates:
        lines.append(f"main's gates, run again on main's final tree: {result.main_gates}")
    notes = [line[2:] for line in result.shared.splitlines() if line.startswith("- ")]
    if notes:
        lines.append(f"{SHARED} on main has {len(notes)} appended lines: {'; '.join(notes)}")
    return lines


def start_engine(console: Console, build: bool) -> Runtime:
    """The Docker engine a demo runs on, with the images built first unless `build` is off."""
    from gastown_mcp.runtime import build_images, connect_runtime

    engine = connect_runtime()
    if build:
        build_images(progress=lambda line: console.print(f"[dim]{line}[/]"))
    return engine


def run_factory(
    console: Console | None = None,
    *,
    build: bool = True,
    plan: Sequence[tuple[str, str, list[str]] | Planned] | None = None,
    slots: int = SLOTS,
    live: bool = True,
    runtime: RuntimeSection | None = None,
    rig: RigSection | None = None,
) -> FactoryResult:
    """Run the factory once; `runtime` replaces the town's default `[runtime]` section (image, limits) and `rig`
    the sample rig's `[rigs.sample]` (default: DEMO_RIG, gated by its tests, for the demo's own PLAN; no gates
    for a plan of your own)."""
    console = console or Console()
    started = time.monotonic()
    engine = start_engine(console, build)
    with contextlib.ExitStack() as stack:
        upstream, default, env, model = pick_model(stack, _standin_app, "the model")
        console.print(f"[bold]model:[/] {model}")
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gastown-demo-")))
        name = f"demo{os.getpid() % 100000}"
        settings = _settings(
            root / "town", name, upstream, default, runtime, rig or (DEMO_RIG if plan is None else None)
        )
        with contextlib.closing(assemble.open_town(settings)) as setup:
            setup.rig_add(operator(), RIG, str(_sample_rig(root)))
        process = TownProcess(settings, env, engine, on_status=lambda s: None, teardown=True)
        planned = [Planned(*item) for item in plan or PLAN]
        result = run_in_town(process, console, lambda: _factory(process, console, started, planned, slots, live))
        result.model = model
    _summary(console, result)
    return result


def pick_model(
    stack: contextlib.ExitStack, standin: Callable[[], Any], plays: str
) -> tuple[dict[str, Any], str, dict[str, str], str]:
    """A demo's upstream: Anthropic when ANTHROPIC_API_KEY is set, else the scripted stand-in served here from a
    thread for as long as `stack` lasts. Returns the upstreams, the default one, the town's environment and
    what plays the model (`plays`: what the stand-in stands in for)."""
    key = os.environ.get("ANTHROPIC_API_KEY")
    if key:
        upstream = {"anthropic": {"base_url": "https://api.anthropic.com", "key_env": "ANTHROPIC_API_KEY"}}
        return (
            upstream,
            "anthropic",
            {"ANTHROPIC_API_KEY": key},
            "Claude through the gateway (ANTHROPIC_API_KEY is set)",
        )
    url = stack.enter_context(serving.serve_in_thread(standin()))
    upstream = {"standin": {"base_url": url, "key_env": ""}}  # the stand-in takes no key
    return (
        upstream,
        "standin",
        {},
        f"the scripted stand-in plays {plays}: no ANTHROPIC_API_KEY set, no network, no cost",
    )


def run_in_town(process: TownProcess, console: Console, body: Callable[[], Awaitable[R]]) -> R:
    """Start `process`, run `body` once the town is up, and stop the town however `body` ends."""
    holder: dict[str, R] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            ready = anyio.Event()
            tg.start_soon(process.run, lambda _s: ready.set())
            await ready.wait()
            name = process.settings.town.name
            console.print(f"town {name} up: MCP {process.state.mcp_url if process.state else ''}")
            try:
                holder["result"] = await body()
            finally:
                process.stop()

    anyio.run(main)
    return holder["result"]


def exit_code(run: Callable[[], Any]) -> int:
    """A demo's exit status: 0 when it ended ok; an expected error is one line on stderr and 1."""
    try:
        return 0 if run().ok else 1
    except GastownError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main() -> int:
    return exit_code(run_factory)


if __name__ == "__main__":
    sys.exit(main())
