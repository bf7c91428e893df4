"""`gastown agent ...`: register agents, list them, rotate their secrets, remove them.

Secrets (the MCP bearer token and the gateway key) are printed only by `add` and `token`, once.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from gastown_mcp import console
from gastown_mcp.cli._edge import Json, TownDir, actor, emit, open_town
from gastown_mcp.config import Settings
from gastown_mcp.town import Credentials

app = typer.Typer(help="Register agents and manage their credentials.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="Agent name: lowercase letters, digits and '-'.")]


def _credentials_json(creds: Credentials) -> dict[str, object]:
    return {"agent": creds.agent.model_dump(mode="json"), "token": creds.token, "gateway_key": creds.gateway_key}


def _print_credentials(c: Console, creds: Credentials, settings: Settings) -> None:
    name = creds.agent.name
    host = "127.0.0.1" if settings.server.host == "0.0.0.0" else settings.server.host
    url = f"http://{host}:{settings.server.port}/mcp"
    c.print(f"agent [bold]{name}[/] ({creds.agent.role.value})")
    c.print(f"  MCP token    {creds.token}", soft_wrap=True)
    c.print(f"  gateway key  {creds.gateway_key}", soft_wrap=True)
    c.print("[yellow]Save these now: they will not be shown again[/] (`gastown agent token` issues new ones).")
    c.print("Add to Claude Code over HTTP:")
    c.print(
        f'  claude mcp add --transport http gastown {url} --header "Authorization: Bearer {creds.token}"',
        soft_wrap=True,
        highlight=False,
    )


@app.command("add")
def add(
    name: Name,
    role: Annotated[
        str, typer.Option("--role", "-r", help="overseer, mayor, refinery, deacon, witness, polecat, dog.")
    ],
    rig: Annotated[str | None, typer.Option("--rig", help="The rig (project) it works on.")] = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Register an agent and print its MCP token and gateway key (shown once)."""
    with open_town(town_dir) as town:
        creds = town.agent_add(actor(town, None), name, role, rig)
        settings = town.settings
    emit(as_json, _credentials_json(creds), lambda c: _print_credentials(c, creds, settings))


@app.command("list")
def list_(
    role: Annotated[str | None, typer.Option("--role", "-r", help="Only this role.")] = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """List agents (never their secrets)."""
    with open_town(town_dir) as town:
        agents = town.agents(actor(town, None), role)
    emit(as_json, agents, lambda c: c.print(console.agent_table(agents)))


@app.command("token")
def token(name: Name, town_dir: TownDir = None, as_json: Json = False) -> None:
    """Issue a new MCP token and gateway key; the old ones stop working at once."""
    with open_town(town_dir) as town:
        creds = town.agent_token(actor(town, None), name)
        settings = town.settings
    emit(as_json, _credentials_json(creds), lambda c: _print_credentials(c, creds, settings))


@app.command("remove")
def remove(
    name: Name,
    reason: Annotated[str, typer.Option("--reason")] = "",
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Remove an agent: its beads go back to the queue and its secrets stop working."""
    with open_town(town_dir) as town:
        agent = town.agent_remove(actor(town, None), name, reason)
    emit(as_json, agent, lambda c: c.print(f"removed agent [bold]{agent.name}[/]; beads it held were released"))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="agent")
