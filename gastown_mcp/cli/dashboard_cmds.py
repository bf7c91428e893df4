"""`gastown dashboard token|url`: the operator's login token for the web dashboard, and where it is served."""

from __future__ import annotations

import typer

from gastown_mcp.cli._edge import Json, TownDir, actor, emit, note, open_town
from gastown_mcp.errors import NotFound
from gastown_mcp.runstate import read_state

app = typer.Typer(help="The operator's web dashboard (served by `gastown up`).", no_args_is_help=True)


@app.command("token")
def token(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Issue the dashboard login token (shown once); any earlier token stops working."""
    with open_town(town_dir) as town:
        secret = town.operator_token(actor(town, None))
        state = read_state(town.settings)
    url = state.dashboard_url if state else None
    emit(as_json, {"token": secret, "url": url}, lambda c: c.print(secret, soft_wrap=True, highlight=False))
    if not as_json:
        note(f"log in at {url}" if url else "the dashboard is served by `gastown up`")


@app.command("url")
def url(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Where the running town serves the dashboard."""
    with open_town(town_dir) as town:
        state = read_state(town.settings)
    if state is None or not state.dashboard_url:
        raise NotFound("no running town with a dashboard here: start one with `gastown up`")
    address = state.dashboard_url
    emit(as_json, {"url": address}, lambda c: c.print(address, soft_wrap=True, highlight=False))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="dashboard")
