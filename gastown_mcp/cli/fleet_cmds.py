"""`gastown up|down|sling|doctor`, `gastown rig ...`, `gastown image build` and `gastown agent spawn|stop|logs|ls`.

These are the commands that touch containers. `up` runs the town process; the others attach to it through
the state file it writes, so they use the same network and URLs.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gastown_mcp.cli import agents
from gastown_mcp.cli._edge import (
    AsAgent,
    Json,
    TownDir,
    actor,
    attached_town,
    emit,
    find_town_dir,
    note,
    open_town,
    print_json,
)
from gastown_mcp.cli._logs import render_log
from gastown_mcp.config import TOWN_FILE, load_settings
from gastown_mcp.errors import NotFound, RuntimeUnavailable
from gastown_mcp.runstate import read_state
from gastown_mcp.runtime import build_images, connect_runtime
from gastown_mcp.town import Town

rig_app = typer.Typer(help="Register projects (rigs) the town works on.", no_args_is_help=True)
image_app = typer.Typer(help="Build the agent and town container images.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("sling")(sling)
    app.command("doctor")(doctor)
    app.add_typer(rig_app, name="rig")
    app.add_typer(image_app, name="image")
    agents.app.command("spawn")(spawn)
    agents.app.command("stop")(stop)
    agents.app.command("logs")(logs)
    agents.app.command("ls")(ls)


def up(
    town_dir: TownDir = None,
    runtime: Annotated[
        bool, typer.Option("--runtime/--no-runtime", help="Attach Docker to run agents in containers.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print where the town listens, as JSON, once up.")] = False,
) -> None:
    """Run the town: MCP server, LLM gateway and witness, until Ctrl-C (agents are stopped gracefully)."""
    import anyio

    from gastown_mcp.cli import model_cmds  # the gateway, servers and supervisors load only for `up`
    from gastown_mcp.daemon import TownProcess, provider_env

    with open_town(town_dir) as town:
        settings = town.settings
        routes, warnings = model_cmds.upstream_lines(town, os.environ)
    if read_state(settings) is not None:
        note("[yellow]a town is already running here[/]; `gastown down` stops it")
        raise typer.Exit(4)
    rt = connect_runtime(settings.runtime) if runtime else None
    console = Console(stderr=True)
    process = TownProcess(settings, provider_env(settings, os.environ), rt, on_status=lambda line: console.print(line))

    def ready(state: object) -> None:
        s = process.state
        assert s is not None
        if as_json:
            print_json(s)
            sys.stdout.flush()
        console.print(f"[bold green]town {settings.town.name} is up[/] (pid {s.pid})")
        console.print(f"  MCP      {s.mcp_url}" + (f"  (agents: {s.agent_mcp_url})" if s.agent_mcp_url else ""))
        console.print(
            f"  gateway  {s.gateway_url}" + (f"  (agents: {s.agent_gateway_url})" if s.agent_gateway_url else "")
        )
        if s.dashboard_url:
            console.print(f"  dashboard {s.dashboard_url}  (log in with `gastown dashboard token`; /metrics)")
        console.print(f"  witness  every {settings.witness.interval_seconds:.0f}s; Ctrl-C stops the town")
        model_cmds.print_upstreams(console, routes, warnings)

    anyio.run(process.run, ready)
    console.print("town stopped")


def down(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Stop a town started with `gastown up` (its agents are stopped and their beads requeued)."""
    from gastown_mcp.daemon import stop_running_town

    with open_town(town_dir) as town:
        state = stop_running_town(town.settings)
    if as_json:
        print_json({"stopped": state.pid})
    else:
        note(f"town process {state.pid} stopped")


def spawn(
    role: Annotated[str, typer.Option("--role", "-r")] = "polecat",
    rig: Annotated[str | None, typer.Option("--rig")] = None,
    bead: Annotated[str | None, typer.Option("--bead", help="Put this bead on the new agent's hook.")] = None,
    command: Annotated[list[str] | None, typer.Argument(help="Program to run instead of Claude Code.")] = None,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Request an agent in its own hardened container; the running town (`gastown up`) starts it."""
    with open_town(town_dir) as town:
        agent = town.spawn(actor(town, as_agent), role, rig=rig, bead=bead, command=command or ())
    emit(as_json, agent, lambda c: c.print(f"requested [bold]{agent.name}[/] ({agent.role.value}): {_when(town)}"))


def stop(
    name: str,
    reason: Annotated[str, typer.Option("--reason")] = "stopped by the operator",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Stop an agent's container; its beads go back to the queue (not a failed attempt), its branch is kept."""
    with open_town(town_dir) as town:
        agent = town.stop(actor(town, as_agent), name, reason)
    done = agent.state.value == "exited"
    emit(as_json, agent, lambda c: c.print(f"stopped {agent.name}" if done else f"{agent.name}: {_when(town)}"))


def logs(
    name: str,
    tail: Annotated[int, typer.Option("--tail", "-n")] = 200,
    town_dir: TownDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="The raw lines (Claude Code's stream-json).")] = False,
) -> None:
    """The last lines of an agent container's output: Claude Code's session as readable lines."""
    with attached_town(town_dir) as town:
        text = town.logs(actor(town, None), name, tail)
    if as_json:
        typer.echo(text)
    else:
        for line in render_log(text):
            typer.echo(line)


def ls(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Agents with their container state, branch and hook."""
    from gastown_mcp.cli import model_cmds

    with open_town(town_dir) as town:
        found = town.agents(actor(town, None))
        errors = model_cmds.model_errors(town)

    def render(c: Console) -> None:
        table = Table("agent", "role", "rig", "state", "hook", "branch", "exit", "last model error")
        for a in found:
            m = a.metadata
            table.add_row(
                a.name,
                a.role.value,
                a.rig or "",
                a.state.value,
                str(m.get("hook", "")),
                str(m.get("branch", "")),
                str(m.get("exit_reason", "")),
                model_cmds.error_text(errors.get(a.name)),
            )
        c.print(table)

    emit(as_json, [{**a.model_dump(mode="json"), "model_error": errors.get(a.name)} for a in found], render)


def sling(
    bead: str,
    to: Annotated[str, typer.Argument(help="A running agent, or a rig (spawns a polecat).")],
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Put a bead on an agent's hook; slinging to a rig requests a polecat for it (the running town starts it)."""
    with open_town(town_dir) as town:
        agent = town.sling(actor(town, as_agent), bead, to)
    emit(as_json, agent, lambda c: c.print(f"{bead} is on the hook of [bold]{agent.name}[/] ({agent.state.value})"))


def _when(town: Town) -> str:
    """When recorded intent is carried out: by the running town's reconciler, or when the town comes up."""
    if read_state(town.settings) is None:
        return "no town is running here: it starts when you run `gastown up`"
    return "the running town starts it within a few seconds"


@rig_app.command("add")
def rig_add(
    name: str,
    source: Annotated[str, typer.Argument(help="A git path or URL (it needs a `main` branch).")],
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Register a project: the town keeps its own clone, and only the merge queue moves its main."""
    if not _is_url(source) and not Path(source).expanduser().exists():
        raise NotFound(f"no repository at {source}: pass the path of a git repository with a `main` branch, or a URL")
    with open_town(town_dir) as town:
        rig = town.rig_add(actor(town, None), name, str(Path(source).expanduser()) if not _is_url(source) else source)
    emit(as_json, rig, lambda c: c.print(f"rig {rig.name} at {rig.repo} (main at {rig.main[:10]})"))


def _is_url(source: str) -> bool:
    """A git URL (`scheme://...` or scp-like `user@host:path`) rather than a local path."""
    return "://" in source or re.match(r"^[\w.-]+@[\w.-]+:", source) is not None


@rig_app.command("list")
def rig_list(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Rigs with their clone and where main is."""
    with open_town(town_dir) as town:
        found = town.rig_list(actor(town, None))

    def render(c: Console) -> None:
        for r in found:
            c.print(f"{r.name}  {r.repo}  main {r.main[:10]}")

    emit(as_json, found, render)


@rig_app.command("remove")
def rig_remove(name: str, town_dir: TownDir = None, as_json: Json = False) -> None:
    """Forget a rig and delete the town's clone of it."""
    with open_town(town_dir) as town:
        town.rig_remove(actor(town, None), name)
    if as_json:
        print_json({"removed": name})
    else:
        note(f"rig {name} removed")


@image_app.command("build")
def image_build(
    rebuild: Annotated[bool, typer.Option("--rebuild")] = False,
    town: Annotated[bool, typer.Option("--town", help="Also build the town server image for compose.yaml.")] = False,
    as_json: Json = False,
) -> None:
    """Build the agent image (and, with no registry, a local Debian base first). Skips what is up to date.

    In a town directory (or with GASTOWN_TOWN), the agent user gets that town's `[runtime] agent_uid/agent_gid`."""
    console = Console(stderr=True)
    env_town = os.environ.get("GASTOWN_TOWN")
    here = Path(env_town).expanduser() if env_town else Path.cwd()
    ids = None  # the image's defaults
    if (here / TOWN_FILE).is_file():
        runtime_settings = load_settings(here).runtime
        ids = (runtime_settings.agent_uid, runtime_settings.agent_gid)
    result = build_images(rebuild=rebuild, progress=lambda line: console.print(line), town=town, agent_ids=ids)
    if as_json:
        print_json(
            {"agent": result.agent_tag, "built": result.built, "skipped": result.skipped, "seconds": result.seconds}
        )


def doctor(
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Run the containment self-test in real containers.")
    ] = False,
    fix: Annotated[bool, typer.Option("--fix", help="Apply the safe repairs (backup, orphan cleanup).")] = False,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Health checks (database, journal, backups, disk, orphans, Docker, gateway) as a table; exit 1 on red.
    With --sandbox, prove containment from inside a container (pass/fail table); in a town with
    `[runtime] backend = "swarm"`, on this engine and then on each swarm node agents may run on."""
    if not sandbox:
        from gastown_mcp.cli.dogs_cmds import run_doctor

        run_doctor(town_dir, fix, as_json, lambda: connect_runtime().describe())
        return
    in_town = town_dir is not None or (Path.cwd() / TOWN_FILE).is_file()
    section = load_settings(find_town_dir(town_dir)).runtime if in_town else None
    if section is not None and section.backend == "swarm":  # this engine, then every node agents may run on
        from gastown_mcp.runtime.swarm_backend import SwarmRuntime
        from gastown_mcp.runtime.swarm_selftest import run_on_nodes

        results = run_on_nodes(SwarmRuntime.connect(placement=section.swarm_placement), section.image)
    else:
        from gastown_mcp.runtime.selftest import run_selftest

        results = run_selftest(connect_runtime())
    failed = [r for r in results if not r.passed]
    if as_json:
        print_json([{"name": r.name, "passed": r.passed, "detail": r.detail} for r in results])
    else:
        table = Table("check", "result", "detail")
        for r in results:
            table.add_row(r.name, "[green]pass[/]" if r.passed else "[red]FAIL[/]", r.detail)
        Console().print(table)
    if failed:
        raise RuntimeUnavailable(f"{len(failed)} containment checks failed: {', '.join(r.name for r in failed)}")
