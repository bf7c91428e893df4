"""`gastown mayor start`: the mayor as Claude Code in its own container, with the mayor's tools and no worktree.

With a town running (`gastown up`) it starts at once (an ended mayor session is resumed); without one, the
request waits and the next `gastown up` starts it. The operator can instead keep the mayor themself, connected
over stdio or HTTP (README, "Claude Code as the mayor or overseer").
"""

from __future__ import annotations

from typing import Annotated

import typer

from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, attached_town, emit, open_town
from gastown_mcp.errors import NotFound

app = typer.Typer(help="The mayor as an AI: Claude Code in a container, directed by the overseer.")
app.info.no_args_is_help = True


@app.command("start")
def start(
    name: Annotated[str, typer.Option("--name", help="the mayor agent's name")] = "mayor",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Run the mayor as Claude Code in its own container; directives reach it as nudges."""
    try:
        with attached_town(town_dir) as town:
            agent = town.mayor_start(actor(town, as_agent), name)
        when = "running" if agent.state.alive else agent.state.value
    except NotFound as exc:
        if "no running town" not in str(exc):
            raise
        with open_town(town_dir) as town:
            agent = town.mayor_start(actor(town, as_agent), name)
        when = "requested: the next `gastown up` starts it"
    emit(as_json, agent, lambda c: c.print(f"mayor [bold]{agent.name}[/] {when}"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="mayor")
