"""`gastown budget set|show|clear` and `gastown usage`: what agents may spend and what they have spent."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, note, open_town, print_json
from gastown_mcp.town.goals import RoleUsage

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
    by: Annotated[
        str | None, typer.Option("--by", help="Group by bead, convoy, role, rig or agent instead of per agent.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows with --by, dearest first.")] = 50,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
    by_role: Annotated[bool, typer.Option("--by-role", help="sum by role, with each role's share of tokens")] = False,
) -> None:
    """Per agent: requests, tokens by kind, USD and what remains of its budgets; or, with --by, spend per bead,
    convoy, role or rig (a model request counts for the bead its agent had claimed); or --by-role, each role's
    share of the tokens."""
    if by_role:
        with open_town(town_dir) as town:
            roles = town.usage_by_role(actor(town, as_agent))
        emit(as_json, roles, lambda c: c.print(role_table(roles)))
        return
    if by is not None:
        if agent is not None:
            raise typer.BadParameter("give an agent or --by, not both", param_hint="--by")
        with open_town(town_dir) as town:
            lines = town.usage_by(actor(town, as_agent), by, limit)

        def render_by(c: Console) -> None:
            table = Table(by, "requests", "input", "output", "cache write", "cache read", "tokens", "USD")
            for u in lines:
                table.add_row(
                    u.key or "(none)",
                    str(u.requests),
                    _fmt(u.input_tokens),
                    _fmt(u.output_tokens),
                    _fmt(u.cache_creation_tokens),
                    _fmt(u.cache_read_tokens),
                    _fmt(u.tokens),
                    _fmt(u.cost_usd, True),
                )
            c.print(table)

        emit(as_json, lines, render_by)
        return
    with open_town(town_dir) as town:
        rows = town.usage(actor(town, as_agent), agent)
        if agent is not None and not rows:
            town.agent(agent)  # an unknown name is an error (exit 3), not an empty table

    def render(c: Console) -> None:
        table = Table(
            "agent", "upstreams", "requests", "input", "output", "cache write", "cache read", "USD", "tokens left",
            "USD left",
        )  # fmt: skip
        for u in rows:
            table.add_row(
                u.agent,
                ", ".join(u.upstreams),
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


def role_table(roles: list[RoleUsage]) -> Table:
    table = Table("role", "agents", "requests", "tokens", "USD", "share of tokens", title="model usage by role")
    for r in roles:
        table.add_row(r.role, str(r.agents), str(r.requests), _fmt(r.tokens), _fmt(r.cost_usd, True), f"{r.share:.1%}")
    return table


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="budget")
    root.command("usage")(usage)
