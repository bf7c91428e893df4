"""The main job for `make demo`: the factory running for real.

Builds the agent image if needed, starts a town (MCP server, gateway, witness, Docker runtime) and adds a
small sample rig. The mayor, a real MCP client with its own token, plans 6 beads (some dependent) and slings
ready ones to the rig, at most 3 polecats at a time; each polecat is Claude Code in its own hardened container,
talking to the town over MCP and to the model through the gateway. With ANTHROPIC_API_KEY set the gateway
forwards to Anthropic; without it the scripted stand-in plays the model (and the demo says so).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from gastown_mcp import assemble, serving
from gastown_mcp.config import (
    GatewaySection,
    LeaseSection,
    RuntimeSection,
    ServerSection,
    Settings,
    TownSection,
    WitnessSection,
)
from gastown_mcp.daemon import TownProcess
from gastown_mcp.models import BeadStatus, Verb
from gastown_mcp.server.client import connect_http, result_text
from gastown_mcp.town import operator

PLAN = [
    ("a", "Add a CONTRIBUTING guide", []),
    ("b", "Document the greet() function", []),
    ("c", "Add a .editorconfig", []),
    ("d", "Add a CHANGELOG entry for the guide", ["a"]),
    ("e", "Add usage examples to the README", ["b"]),
    ("f", "Write release notes", ["d", "e"]),
]
SLOTS = 3


@dataclass
class FactoryResult:
    ok: bool
    seconds: float
    beads: dict[str, str] = field(default_factory=dict)
    main: list[str] = field(default_factory=list)  # subjects on the rig's main, newest first
    merged: int = 0  # beads whose commit is on main
    usage: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    double_worked: int = 0  # beads claimed more than once or taken over (must be 0)
    problems: list[str] = field(default_factory=list)  # sling errors and the mayor's mail, shown on failure


def _sample_rig(root: Path) -> Path:
    repo = root / "sample"
    repo.mkdir()
    (repo / "README.md").write_text("# sample\n\nA tiny project the demo's polecats work on.\n")
    (repo / "greet.py").write_text('def greet(name: str) -> str:\n    return f"hello, {name}"\n')
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


def _standin_app() -> Any:
    from gastown_mcp.standin.app import build_standin
    from gastown_mcp.standin.scripts import script_named

    return build_standin(script_named("polecat")).app


def _settings(
    town_dir: Path, name: str, upstream: dict[str, Any], default: str, runtime: RuntimeSection | None = None
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
    )


async def _factory(
    process: TownProcess,
    console: Console,
    started: float,
    plan: list[tuple[str, str, list[str]]],
    slots: int,
    live: bool = True,
) -> FactoryResult:
    town = process.town
    assert town is not None and process.state is not None
    op = operator()
    creds = town.agent_add(op, "mayor", "mayor")
    ids: dict[str, str] = {}
    async with connect_http(process.state.mcp_url, creds.token) as mayor:
        for key, title, deps in plan:
            res = await mayor.call_tool(
                "bead_create",
                {
                    "title": title,
                    "description": f"{title}. Keep it short; commit on your branch.",
                    "acceptance": "a file with the change is committed on the polecat's branch",
                    "blocked_by": [ids[d] for d in deps],
                },
            )
            assert res.structured_content is not None, res.content
            ids[key] = res.structured_content["id"]
        sling_errors: list[str] = []
        with Live(console=console, refresh_per_second=4, transient=not live) as board:
            while True:
                beads = {b: town.bead_show(op, b) for b in ids.values()}
                agents = town.agents(op, "polecat")
                busy = [a for a in agents if a.state.alive]
                if live:
                    board.update(_board(beads, agents, time.monotonic() - started))
                if all(b.status is BeadStatus.done and not b.awaiting_merge for b in beads.values()):
                    break  # finished means on main, not "said done"
                if any(b.status is BeadStatus.blocked for b in beads.values()):
                    break
                ready = await mayor.call_tool("bead_ready", {"limit": max(10, slots)})
                for row in (ready.structured_content or {}).get("beads", [])[: max(0, slots - len(busy))]:
                    if row["id"] in ids.values() and row["status"] == "open":
                        slung = await mayor.call_tool("town_sling", {"bead": row["id"], "to": "sample"})
                        if slung.is_error and (text := result_text(slung)) not in sling_errors:
                            sling_errors.append(text)
                await anyio.sleep(0.5)
        console.print()
        usage = await mayor.call_tool("town_usage", {})
    main = town.rig_log(op, "sample", limit=50)
    final = {b: town.bead_show(op, b) for b in ids.values()}
    statuses = {b: bead.status.value for b, bead in final.items()}
    merged = sum(1 for bead in final.values() if bead.status is BeadStatus.done and not bead.awaiting_merge)
    claims = [e.bead_id for e in town.events(op, limit=100_000) if e.verb in (Verb.bead_claimed, Verb.bead_taken_over)]
    double = sum(1 for b in ids.values() if claims.count(b) > 1)
    inbox = town.inbox(town.agent("mayor"), unread_only=False, limit=20)
    mail = [f"mail to the mayor: {m.subject}" for m in reversed(inbox)]
    return FactoryResult(
        ok=merged == len(final) and double == 0,
        merged=merged,
        double_worked=double,
        seconds=time.monotonic() - started,
        beads=statuses,
        main=main,
        usage=(usage.structured_content or {}).get("agents", []),
        problems=mail + [f"the last sling failed: {e}" for e in sling_errors[-1:]],
    )


def _board(beads: dict[str, Any], agents: list[Any], elapsed: float) -> Group:
    t = Table("bead", "title", "status", "polecat", title=f"beads ({elapsed:.0f}s)")
    for b in beads.values():
        color = {"done": "green", "in_progress": "yellow", "blocked": "red"}.get(b.status.value, "white")
        t.add_row(b.id, b.title, f"[{color}]{b.status.value}[/]", b.assignee or "")
    a = Table("polecat", "state", "hook", "exit", title="polecats")
    for agent in agents:
        a.add_row(
            agent.name,
            agent.state.value,
            str(agent.metadata.get("hook", "")),
            str(agent.metadata.get("exit_reason", "")),
        )
    return Group(t, a)


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
    verdict = "[bold green]all beads merged on main[/]" if result.ok else "[bold red]not every bead reached main[/]"
    console.print(f"{verdict}: {result.merged}/{len(result.beads)} in {result.seconds:.1f}s ({result.model})")
    if not result.ok:
        for problem in result.problems:
            console.print(f"[red]-[/] {escape(problem)}", highlight=False)


def run_factory(
    console: Console | None = None,
    *,
    build: bool = True,
    plan: list[tuple[str, str, list[str]]] | None = None,
    slots: int = SLOTS,
    live: bool = True,
    runtime: RuntimeSection | None = None,
) -> FactoryResult:
    """Run the factory once; `runtime` replaces the town's default `[runtime]` section (image, limits)."""
    console = console or Console()
    from gastown_mcp.runtime import build_images, connect_runtime

    started = time.monotonic()
    engine = connect_runtime()
    if build:
        build_images(progress=lambda line: console.print(f"[dim]{line}[/]"))
    key = os.environ.get("ANTHROPIC_API_KEY")
    with contextlib.ExitStack() as stack:
        if key:
            upstream = {"anthropic": {"base_url": "https://api.anthropic.com", "key_env": "ANTHROPIC_API_KEY"}}
            default, model, env = (
                "anthropic",
                "Claude through the gateway (ANTHROPIC_API_KEY is set)",
                {"ANTHROPIC_API_KEY": key},
            )
        else:
            standin_url = stack.enter_context(serving.serve_in_thread(_standin_app()))
            upstream = {"standin": {"base_url": standin_url, "key_env": "STANDIN_KEY"}}
            default, env = "standin", {}
            model = "the scripted stand-in plays the model: no ANTHROPIC_API_KEY set, no network, no cost"
        console.print(f"[bold]model:[/] {model}")
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gastown-demo-")))
        name = f"demo{os.getpid() % 100000}"
        settings = _settings(root / "town", name, upstream, default, runtime)
        with contextlib.closing(assemble.open_town(settings)) as setup:
            setup.rig_add(operator(), "sample", str(_sample_rig(root)))
        process = TownProcess(settings, env, engine, on_status=lambda s: None, teardown=True)
        holder: dict[str, FactoryResult] = {}

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                ready = anyio.Event()
                tg.start_soon(process.run, lambda _s: ready.set())
                await ready.wait()
                console.print(f"town {name} up: MCP {process.state.mcp_url if process.state else ''}")
                try:
                    holder["result"] = await _factory(process, console, started, plan or PLAN, slots, live)
                finally:
                    process.stop()

        anyio.run(main)
        result = holder["result"]
        result.model = model
    _summary(console, result)
    return result


def main() -> int:
    try:
        return 0 if run_factory().ok else 1
    except Exception as exc:
        from gastown_mcp.errors import GastownError

        if isinstance(exc, GastownError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
