"""The root `gastown` command group (typer): loads each command's module when it is asked for (`COMMANDS` in
gastown_mcp/cli/__init__.py), and is the one place expected errors become a line on stderr and an exit code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Any, ClassVar

import typer
import typer.main
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from gastown_mcp.errors import GastownError

__all__ = ["build_app", "load_commands"]


def load_commands(modules: tuple[str, ...], name: str | None = None) -> dict[str, Any]:
    """The click commands that the `register()` of these `gastown_mcp.cli` modules add, by name; with `name`, only
    that one is built (typer reads every parameter of a command to build it)."""
    sub = typer.Typer()
    for module in modules:
        importlib.import_module(f"gastown_mcp.cli.{module}").register(sub)
    if name is not None:
        only = typer.Typer()
        only.registered_commands = [c for c in sub.registered_commands if c.name == name]
        only.registered_groups = [g for g in sub.registered_groups if g.name == name]
        if only.registered_commands or only.registered_groups:
            sub = only
    return dict(typer.main.get_group(sub).commands)


class _Group(TyperGroup):
    """The root command group: loads a command's module when that command is asked for, and is the one place
    expected errors turn into a line on stderr and an exit code."""

    table: ClassVar[dict[str, tuple[str, ...]]] = {}  # every top-level command -> its modules (`COMMANDS`)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.table, *(name for name in self.commands if name not in self.table)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in self.table:
            for name, command in load_commands(self.table[cmd_name], cmd_name).items():
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


def build_app(commands: dict[str, tuple[str, ...]]) -> typer.Typer:
    """The root app over `commands` (command -> the modules that register it)."""
    group = type("_Root", (_Group,), {"table": commands})
    app = typer.Typer(
        cls=group,
        name="gastown",
        help="Gas Town: a factory for fleets of AI coding agents working from one bead database.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,  # locals can hold agent tokens
    )
    app.callback()(_root)  # the commands themselves come from COMMANDS, each when it is asked for
    return app
