"""`gastown budget set|show|clear` and `gastown usage`: what agents may spend and what they have spent."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, note, open_town, print_json

app = typer.Typer(help="Token and USD budgets per agent, rig and town (enforced at the gateway).", no_args_is_help=True)

Scope = Annotated[str, typer.Argument(help="agent, rig or town")]
Name = Annotated[str | None, typer.Argument(help="The agent or rig (none for town).")]


def _fmt(v: float | int | None, usd: bool = False) -> str:
    if v is None:
        return "-"
    return f"${v:,.4f}" if usd else f"{v:,}"


@app.command("set")
def set_budget(
    scope: Scope,
    name: Name = None,
    tokens: Annotated[int | None, typer.Option("--tokens")] = None,
    usd: Annotated[float | None, typer.Option("--usd")] = None,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Set a budget; an agent spends from its own, its rig's and the town's."""
    with open_town(town_dir) as town:
        status = town.budget_set(actor(town, as_agent), scope, name, tokens=tokens, usd=usd)
    emit(
        as_json,
        status,
        lambda c: c.print(
            f"budget {status.scope.value} {status.name}: "
            f"{_fmt(status.token_limit)} tokens, {_fmt(status.usd_limit, True)}"
        ),
    )


@app.command("clear")
def clear_budget(
    scope: Scope, name: Name = None, town_dir: TownDir = None, as_agent: AsAgent = None, as_json: Json = False
) -> None:
    """Remove a budget: that scope has no limit of its own any more."""
    with open_town(town_dir) as town:
        town.budget_clear(actor(town, as_agent), scope, name)
    if as_json:
        print_json({"cleared": {"scope": scope, "name": name}})
    else:
        note(f"budget {scope} {name or ''} cleared")


@app.command("show")
def show(town_dir: TownDir = None, as_agent: AsAgent = None, as_json: Json = False) -> None:
    """Every budget with what is spent and what remains."""
    with open_town(town_dir) as town:
        found = town.budget(actor(town, as_agent))

    def render(c: Console) -> None:
        table = Table("scope", "name", "token limit", "tokens spent", "USD limit", "USD spent", "exhausted")
        for b in found:
            table.add_row(
                b.scope.value,
                b.name,
                _fmt(b.token_limit),
                _fmt(b.tokens_spent),
                _fmt(b.usd_limit, True),
                _fmt(b.usd_spent, True),
                "yes" if b.exhausted else "",
            )
        c.print(table)

    emit(as_json, found, render)


def usage(
    agent: Annotated[str | None, typer.Argument()] = None,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Per agent: requests, tokens by kind, USD and what remains of its budgets."""
    with open_town(town_dir) as town:
        rows = town.usage(actor(town, as_agent), agent)
        if agent is not None and not rows:
            town.agent(agent)  # an unknown name is an error (exit 3), not an empty table

    def render(c: Console) -> None:
        table = Table(
            "agent", "requests", "input", "output", "cache write", "cache read", "USD", "tokens left", "USD left"
        )
        for u in rows:
            table.add_row(
                u.agent,
                str(u.requests),
                _fmt(u.input_tokens),
                _fmt(u.output_tokens),
                _fmt(u.cache_creation_tokens),
                _fmt(u.cache_read_tokens),
                _fmt(u.cost_usd, True),
                _fmt(u.tokens_remaining),
                _fmt(u.usd_remaining, True),
            )
        c.print(table)

    emit(as_json, rows, render)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="budget")
    root.command("usage")(usage)
