"""Town-wide commands: `init`, `serve`, `status`, `feed` and `export`."""

from __future__ import annotations

import functools
import json
import sys
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from gastown_mcp import assemble, console
from gastown_mcp.cli import plain
from gastown_mcp.cli._edge import (
    AsAgent,
    Json,
    TownDir,
    actor,
    checked_settings,
    emit,
    jsonable,
    note,
    open_town,
    print_json,
)
from gastown_mcp.config import TOWN_FILE, TownSection, default_town_toml
from gastown_mcp.errors import Conflict, InvalidInput
from gastown_mcp.models import Event
from gastown_mcp.town import Town, roles
from gastown_mcp.town.feed import EventSource

FEED_PAGE = 500


def init(
    directory: Annotated[Path | None, typer.Argument(help="Where to create the town (default: here).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Town name (default: the directory's name).")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Bead id prefix: 1-8 lowercase letters/digits.")] = "gt",
    town_opt: Annotated[
        Path | None, typer.Option("--town", help="Where to create the town (instead of DIRECTORY).", show_default=False)
    ] = None,
    as_json: Json = False,
) -> None:
    """Create a town: a directory with town.toml and the bead database."""
    if directory is not None and town_opt is not None and directory != town_opt:
        raise typer.BadParameter("give the directory once: as DIRECTORY or as --town", param_hint="--town")
    town_dir = (directory or town_opt or Path.cwd()).expanduser().resolve()
    if (town_dir / TOWN_FILE).exists():
        raise Conflict(f"{town_dir} is already a town (it has {TOWN_FILE}); use it with --town {town_dir}")
    name = name or town_dir.name or "town"
    if any(ch in name for ch in '"\\\n'):
        raise InvalidInput(f"town name {name!r} may not contain quotes, backslashes or newlines")
    try:
        TownSection(name=name, prefix=prefix)
    except ValidationError:
        raise InvalidInput(
            f"prefix {prefix!r} must be 1-8 lowercase letters or digits, starting with a letter"
        ) from None
    town_dir.mkdir(parents=True, exist_ok=True)
    (town_dir / TOWN_FILE).write_text(default_town_toml(name, prefix))
    settings = checked_settings(town_dir)
    assemble.open_town(settings, new=True).close()  # opening the town creates and migrates the database
    info = {"town_dir": str(town_dir), "name": name, "prefix": prefix, "db": str(settings.db_path)}

    def render(c: Console) -> None:
        c.print(f"created town [bold]{name}[/] in {town_dir} (bead ids {prefix}-…)")
        c.print(f"next: gastown agent add mayor --role mayor --town {town_dir}", soft_wrap=True, highlight=False)

    emit(as_json, info, render)


def serve(
    as_: Annotated[
        str | None, typer.Option("--as", help="Agent to act as over stdio (required for stdio).", show_default=False)
    ] = None,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp with bearer tokens.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="HTTP host (default from town.toml).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port (default from town.toml).")] = None,
    town_dir: TownDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --http: print the URL as JSON once.")] = False,
) -> None:
    """Run the MCP server: over stdio as one agent, or over HTTP for every agent with a token."""
    if http and as_:
        raise typer.BadParameter("over HTTP each request's bearer token names the agent; drop --as", param_hint="--as")
    if not http and not as_:
        raise typer.BadParameter("stdio serves one agent: pass --as NAME (or use --http)", param_hint="--as")
    if as_json and not http:
        raise typer.BadParameter("over stdio, stdout belongs to MCP; --json needs --http", param_hint="--json")
    with open_town(town_dir) as town:
        try:
            if http:
                from gastown_mcp.server import run_http  # the MCP SDK loads only for `serve`

                host = host or town.settings.server.host
                port = town.settings.server.port if port is None else port
                if as_json:
                    print_json({"town": town.settings.town.name, "url": f"http://{host}:{port}/mcp"})
                note(f"serving town {town.settings.town.name} at http://{host}:{port}/mcp (Ctrl-C to stop)")
                run_http(town, host, port)
            else:
                agent = town.agent(as_ or "")
                from gastown_mcp.cli import stdio_front

                stdio_front.serve(town, agent)  # stdout belongs to the protocol: print nothing here
        except KeyboardInterrupt:
            pass


def status(as_: AsAgent = None, town_dir: TownDir = None, as_json: Json = False) -> None:
    """Beads by status, ready work, agents by role, and spend against budgets."""
    with open_town(town_dir) as town:
        who = actor(town, as_)
        found = town.status(who)
        budgets = town.budget(who) if roles.can(who.role, "town.budget") else []
        usage = town.usage(who) if roles.can(who.role, "town.usage") else []
        failing = town.model_errors(who) if roles.can(who.role, "town.usage") else []

    data = {**found.model_dump(mode="json"), "budgets": budgets, "usage": usage, "model_errors": failing}
    if as_json:
        print_json(data)
    else:
        plain.write(plain.status_text(jsonable(data), plain.Out.of(sys.stdout)))


def _history(
    town: Town, events: EventSource, since: int | None, bead: str | None, agent: str | None, limit: int
) -> list[Event]:
    """The events to show before following: all after `since`, else the last `limit` that match."""
    if since is None and not bead and not agent:
        return town.recent_events(actor(town, None), limit)
    kept: deque[Event] | list[Event] = [] if since is not None else deque(maxlen=limit)
    cursor = since or 0
    while page := events(after_id=cursor, bead_id=bead, agent=agent, limit=FEED_PAGE):
        kept.extend(page)
        cursor = page[-1].id
    return list(kept)


def follow_events(
    events: EventSource,
    cursor: int,
    bead: str | None,
    agent: str | None,
    show: Callable[[Event], None],
    changes: Iterable[object],
) -> None:
    """Print new events as they land until interrupted (Ctrl-C) or `changes` ends. `changes` yields whenever the
    journal may hold new events (a file watch, `follow.journal_changes`): the database is read only then."""
    try:
        for _ in changes:
            while page := events(after_id=cursor, bead_id=bead, agent=agent, limit=FEED_PAGE):
                for event in page:
                    show(event)
                cursor = page[-1].id
                sys.stdout.flush()
    except KeyboardInterrupt:
        return


def feed(
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Keep printing new events.")] = False,
    since: Annotated[int | None, typer.Option("--since", help="Every event after this event id.")] = None,
    bead: Annotated[str | None, typer.Option("--bead", help="Only events about this bead.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only events about this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many past events to show first.")] = 50,
    town_dir: TownDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The audit trail: recent events, and with --follow new ones as they happen."""
    out = Console(soft_wrap=True)

    def show(event: Event) -> None:
        if as_json:
            typer.echo(json.dumps(event.model_dump(mode="json"), sort_keys=True))
        else:
            out.print(console.event_line(event))

    with open_town(town_dir) as town:
        events = functools.partial(town.events, actor(town, None))
        past = _history(town, events, since, bead, agent, max(1, limit))
        for event in past:
            show(event)
        if follow:
            from gastown_mcp.follow import journal_changes  # file watching loads only for --follow

            cursor = past[-1].id if past else (since or 0)
            follow_events(events, cursor, bead, agent, show, journal_changes(town.settings.journal_path))


def export(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
    town_dir: TownDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts on stderr as JSON.")] = False,
) -> None:
    """Beads, labels, dependencies, comments and events as JSONL (one object a line, with its table)."""
    with open_town(town_dir) as town:
        if out is None:
            counts = town.export(actor(town, None), sys.stdout)
        else:
            with out.open("w") as f:
                counts = town.export(actor(town, None), f)
    if as_json:
        print_json(counts, err=True)
    else:
        where = f" to {out}" if out else ""
        note("exported " + ", ".join(f"{n} {table}" for table, n in counts.items()) + where)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("serve")(serve)
    app.command("status")(status)
    app.command("feed")(feed)
    app.command("export")(export)
