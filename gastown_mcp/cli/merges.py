"""`gastown mq list|show|retry|reject`: the merge queue that lands handed-in work on each rig's main."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, open_town
from gastown_mcp.models import MergeRequest

app = typer.Typer(help="The merge queue: handed-in work on its way to main.", no_args_is_help=True)


def _table(found: list[MergeRequest]) -> Table:
    table = Table("id", "rig", "bead", "agent", "state", "attempts", "tip", "landed", "detail")
    for r in found:
        table.add_row(
            str(r.id),
            r.rig,
            r.bead_id,
            r.agent,
            r.state.value,
            str(r.attempts),
            r.tip[:10],
            (r.landed or "")[:10],
            r.detail[:60],
        )
    return table


@app.command("list")
def mq_list(
    rig: Annotated[str | None, typer.Option("--rig")] = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="queued, testing, merged, ... (repeatable)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Merge requests, newest first."""
    with open_town(town_dir) as town:
        found = town.merge_list(actor(town, as_agent), rig=rig, state=state or (), limit=limit)
    emit(as_json, found, lambda c: c.print(_table(found)))


@app.command("show")
def mq_show(request: int, town_dir: TownDir = None, as_agent: AsAgent = None, as_json: Json = False) -> None:
    """One merge request in full, with its conflict or the tail of its gate log."""
    with open_town(town_dir) as town:
        found = town.merge_show(actor(town, as_agent), request)

    def render(c: Console) -> None:
        c.print(_table([found]))
        if found.detail:
            c.print(found.detail)
        if found.log_tail:
            c.print(found.log_tail, markup=False, highlight=False)

    emit(as_json, found, render)


@app.command("retry")
def mq_retry(request: int, town_dir: TownDir = None, as_agent: AsAgent = None, as_json: Json = False) -> None:
    """Queue an ended request again; its bead goes back to awaiting merge."""
    with open_town(town_dir) as town:
        found = town.merge_retry(actor(town, as_agent), request)
    emit(as_json, found, lambda c: c.print(f"merge request {found.id} is {found.state.value} again"))


@app.command("reject")
def mq_reject(
    request: int,
    reason: Annotated[str, typer.Option("--reason", help="What the next polecat should do differently.")],
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Refuse a queued request; its bead goes back for rework with the reason."""
    with open_town(town_dir) as town:
        found = town.merge_reject(actor(town, as_agent), request, reason)
    emit(as_json, found, lambda c: c.print(f"merge request {found.id} rejected; {found.bead_id} is back for rework"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="mq")
