"""The root `gastown` command group (typer): loads each command's module when it is asked for (`COMMANDS` in
gastown_mcp/cli/__init__.py), and is the one place expected errors become a line on stderr and an exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from gastown_mcp.cli import COMMANDS, load_commands
from gastown_mcp.errors import GastownError

__all__ = ["build_app"]


class _Group(TyperGroup):
    """The root command group: loads a command's module when that command is asked for, and is the one place
    expected errors turn into a line on stderr and an exit code."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            for name, command in load_commands(COMMANDS[cmd_name], cmd_name).items():
                self.commands.setdefault(name, command)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches and "Did you mean" not in exc.message:
                suggestions = ", ".join(f"{m!r}" for m in matches)
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise

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
        from importlib.metadata import PackageNotFoundError, version

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
    app.callback()(_root)  # the commands themselves come from COMMANDS, each when it is asked for
    return app
