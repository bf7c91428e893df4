"""The `gastown` command line: thin commands that parse, call `Town`, and print (rich tables or --json).

One typer sub-app per noun (`bead`, `agent`, `mail`, ...) lives in its own module here; add a new noun by
writing `gastown_mcp/cli/<noun>.py` with an `app` and adding it in `build_app()`. Every `GastownError` becomes
one line on stderr (`error: ...`) and the error's exit code, in `_Group.invoke` and nowhere else.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from gastown_mcp.cli import (
    agents,
    beads,
    budget_cmds,
    dashboard_cmds,
    dogs_cmds,
    fleet_cmds,
    goals,
    mayor_cmds,
    merges,
    messages,
    plans,
    town_cmds,
)
from gastown_mcp.errors import GastownError

__all__ = ["build_app", "main"]


class _Group(TyperGroup):
    """The root command group: the one place expected errors turn into a line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except GastownError as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(exc.exit_code) from None


def build_app() -> typer.Typer:
    app = typer.Typer(
        cls=_Group,
        name="gastown",
        help="Gas Town: a factory for fleets of AI coding agents working from one bead database.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,  # locals can hold agent tokens
    )

    town_cmds.register(app)
    app.add_typer(beads.app, name="bead")
    app.add_typer(agents.app, name="agent")
    messages.register(app)
    fleet_cmds.register(app)
    dogs_cmds.register(app)
    budget_cmds.register(app)
    app.add_typer(merges.app, name="mq")
    plans.register(app)
    from gastown_mcp.cli import model_cmds  # `gastown route` and `gastown model`

    model_cmds.register(app)
    dashboard_cmds.register(app)
    goals.register(app)
    mayor_cmds.register(app)
    return app


def main() -> None:
    build_app()(prog_name="gastown")
