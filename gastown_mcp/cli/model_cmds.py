"""`gastown route list|add|remove` and `gastown model serve`: where the gateway sends each agent's model calls,
and a local model server (llama.cpp, a small GGUF model) to send the cheap ones to.

`upstream_lines()` is also what `gastown up` prints at start: each route, its upstream, and whether that
upstream's key is there, so a town with nowhere to send model calls says so before an agent finds out.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gastown_mcp.assemble import provider_env
from gastown_mcp.cli import plain
from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, note, open_town, print_json
from gastown_mcp.config import Upstream
from gastown_mcp.errors import InvalidInput
from gastown_mcp.gateway import localmodel, upstream_keys
from gastown_mcp.town import Town, operator
from gastown_mcp.town.budgets import ModelError

route_app = typer.Typer(
    help="Which upstream (model server) serves which agent and model, through the gateway.", no_args_is_help=True
)
model_app = typer.Typer(help="Run a local model server for the gateway's cheap tier.", no_args_is_help=True)

AgentGlob = Annotated[str, typer.Option("--agent", "-a", help="Agent name or glob (default: every agent).")]
ModelGlob = Annotated[str, typer.Option("--model", "-m", help="Model id or glob (default: every model).")]


def register(app: typer.Typer) -> None:
    app.add_typer(route_app, name="route")
    app.add_typer(model_app, name="model")


def key_state(name: str, upstream: Upstream, keys: Mapping[str, str]) -> str:
    """`set`, `missing (...)` or `none needed`, for an upstream, from the keys the edge found."""
    if upstream.key_ref is None:
        return "none needed"
    if name in keys:
        return "set"
    where = f"key file {upstream.key_file}" if upstream.key_file else f"${upstream.key_env}"
    return f"missing ({where})"


def route_rows(town: Town, env: Mapping[str, str], who: Any = None) -> list[dict[str, str]]:
    """Every route in the order the gateway tries them, with its upstream's URL and key state."""
    gateway = town.settings.gateway
    keys = upstream_keys(gateway, provider_env(town.settings, env))
    rows = []
    for r in town.route_table(who or operator()):
        upstream = gateway.upstreams.get(r.upstream)
        rows.append(
            {
                **r.model_dump(),
                "base_url": upstream.base_url if upstream else "?",
                "key": key_state(r.upstream, upstream, keys) if upstream else "unknown upstream",
            }
        )
    return rows


def upstream_lines(town: Town, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """What `gastown up` prints: one line per route, and loud warnings for routes whose upstream has no key."""
    lines, warnings, warned = [], [], set()
    for r in route_rows(town, env):
        who = "every agent" if r["agent"] == "*" else f"agent {r['agent']}"
        what = "every model" if r["model"] == "*" else f"model {r['model']}"
        lines.append(f"{who}, {what} -> {r['upstream']} ({r['base_url']}, key {r['key']}) [{r['source']}]")
        if r["key"].startswith("missing") and r["upstream"] not in warned:
            warned.add(r["upstream"])
            warnings.append(
                f"upstream {r['upstream']} has no key: {r['key'][9:-1]} is not set, so every model call routed "
                "there is refused (503) and agents sent there cannot work. Set it and restart, or route to "
                "another upstream (`gastown route add UPSTREAM --model 'GLOB'`; `gastown model serve` runs a "
                "local one)."
            )
    return lines, warnings


def print_upstreams(c: Console, routes: list[str], warnings: list[str]) -> None:
    """The routes block of `gastown up`'s start, and its warnings in red."""
    for i, line in enumerate(routes):
        c.print(f"  {'routes' if i == 0 else '':<8} {escape(line)}", highlight=False)
    for warning in warnings:
        c.print(f"[bold red]warning:[/] {escape(warning)}", highlight=False)


def model_errors(town: Town) -> dict[str, ModelError]:
    """Agent name → its latest failed model call, for agents whose calls fail with no success since."""
    return {e.agent: e for e in town.model_errors(operator())}


def error_text(error: ModelError | None) -> str:
    if error is None:
        return ""
    return plain.error_text(error.failures, error.status, error.error)


@route_app.command("list")
def route_list(town_dir: TownDir = None, as_agent: AsAgent = None, as_json: Json = False) -> None:
    """Routes in the order the gateway tries them (runtime, town.toml, default), with each upstream's key state."""
    with open_town(town_dir) as town:
        rows = route_rows(town, os.environ, actor(town, as_agent))

    def render(c: Console) -> None:
        table = Table("source", "agent", "model", "upstream", "base URL", "key")
        for r in rows:
            key = r["key"] if r["key"] in ("set", "none needed") else f"[red]{escape(r['key'])}[/]"
            table.add_row(r["source"], r["agent"], r["model"], r["upstream"], r["base_url"], key)
        c.print(table)

    emit(as_json, rows, render)


@route_app.command("add")
def route_add(
    upstream: Annotated[str, typer.Argument(help="An upstream named under [gateway.upstreams] in town.toml.")],
    agent: AgentGlob = "*",
    model: ModelGlob = "*",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Send matching agents' requests for matching models to UPSTREAM (tried before town.toml's routes; a
    running town's gateway picks it up at its next request)."""
    with open_town(town_dir) as town:
        route = town.route_add(actor(town, as_agent), upstream, agent, model)
    emit(
        as_json,
        route,
        lambda c: c.print(f"route: agent {route.agent}, model {route.model} -> {route.upstream}", highlight=False),
    )


@route_app.command("remove")
def route_remove(
    agent: AgentGlob = "*",
    model: ModelGlob = "*",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Remove the runtime route with exactly this agent and model pattern."""
    with open_town(town_dir) as town:
        town.route_remove(actor(town, as_agent), agent, model)
    emit(as_json, {"removed": {"agent": agent, "model": model}}, lambda c: c.print(f"route {agent} / {model} removed"))


@model_app.command("serve")
def serve(
    upstream: Annotated[str, typer.Option("--upstream", help="The [gateway.upstreams.NAME] it serves.")] = "local",
    port: Annotated[int | None, typer.Option("--port", help="Default: the upstream's base_url port, or 8767.")] = None,
    threads: Annotated[int, typer.Option("--threads", "-t", min=1, max=64)] = 1,
    ctx: Annotated[int, typer.Option("--ctx", min=256, max=131072, help="Context size in tokens.")] = 2048,
    server: Annotated[Path | None, typer.Option("--server", help="A llama-server program.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="A GGUF model file.")] = None,
    alias: Annotated[str, typer.Option("--alias", help="The model name it reports.")] = localmodel.DEFAULT_ALIAS,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Run llama.cpp's server on 127.0.0.1 with a small model, keyed by a file only the town reads, until Ctrl-C."""
    with open_town(town_dir) as town:
        settings = town.settings
    configured = settings.gateway.upstreams.get(upstream)
    key_file, url_port = _where(upstream, configured)
    server_path, model_path = localmodel.locate(server, model)
    spec = localmodel.LocalModel(
        server=server_path,
        model=model_path,
        key_file=settings.town_dir / key_file,
        port=port or url_port or localmodel.DEFAULT_PORT,
        alias=alias,
        threads=threads,
        ctx=ctx,
    )
    localmodel.ensure_key(spec.key_file)
    if configured is None:
        note(
            f"[yellow]town.toml has no [gateway.upstreams.{upstream}][/]: add this, restart `gastown up`, then "
            f"route to it (`gastown route add {upstream} --model '{alias}*'`):\n\n"
            f'[gateway.upstreams.{upstream}]\nbase_url = "{spec.url}"\nkey_file = "{key_file}"\n'
            'auth = "bearer"\nprice = { input = 0, output = 0 }\n'
        )
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background, where SIGINT is ignored
        signal.signal(sig, _interrupt)
    process = localmodel.start(spec, settings.town_dir / "run" / f"model-{upstream}.log")
    try:
        localmodel.wait_ready(spec, process)
        if as_json:  # one line once it answers, for scripts that start it in the background
            print_json({"upstream": upstream, "url": spec.url, "alias": alias, "model": str(model_path)})
        else:
            note(f"local model {alias} ({model_path.name}) at {spec.url} for upstream {upstream}; Ctrl-C stops it")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            localmodel.stop(process)
    if process.returncode not in (0, -2, -15, None):
        note(f"the local model server exited with {process.returncode}; see run/model-{upstream}.log")
        raise typer.Exit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _where(name: str, upstream: Upstream | None) -> tuple[str, int | None]:
    """The key file and port an upstream's settings give, refusing settings this server cannot match."""
    if upstream is None:
        return localmodel.DEFAULT_KEY_FILE, None
    parts = urlsplit(upstream.base_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise InvalidInput(
            f"[gateway.upstreams.{name}] base_url is {upstream.base_url}; `gastown model serve` binds 127.0.0.1 only: "
            "use http://127.0.0.1:PORT"
        )
    if not upstream.key_file:
        raise InvalidInput(
            f"[gateway.upstreams.{name}] has no key_file; `gastown model serve` keys the server with a file only the "
            f'town reads: add key_file = "{localmodel.DEFAULT_KEY_FILE}" (and auth = "bearer")'
        )
    return upstream.key_file, parts.port


__all__ = ["register", "route_rows", "upstream_lines"]
