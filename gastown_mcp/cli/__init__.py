"""The `gastown` command line: thin commands that parse, call `Town`, and print (rich tables or --json).

One typer sub-app per noun (`bead`, `agent`, `mail`, ...) lives in its own module here; add a new noun by
writing `gastown_mcp/cli/<noun>.py` with an `app` and adding it in `build_app()`. Every `GastownError` becomes
one line on stderr (`error: ...`) and the error's exit code, in `_Group.invoke` and nowhere else; a usage error
(a bad option value, a missing argument) is one such line too, with exit code 2, in `_Group.main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
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
    swarm_cmds,
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

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except UsageError as exc:
            where = f" (`{exc.ctx.command_path} --help` shows the usage)" if exc.ctx else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        except ClickException as exc:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"gastown {version('gastown_mcp')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("gastown (not installed)")
        raise typer.Exit()


def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Gas Town: a factory for fleets of AI coding agents working from one bead database."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        cls=_Group,
        name="gastown",
        help="Gas Town: a factory for fleets of AI coding agents working from one bead database.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,  # locals can hold agent tokens
    )
    app.callback()(_root)

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
    swarm_cmds.register(app)
    return app


def main() -> None:
    build_app()(prog_name="gastown")
