"""The `gastown` command line: thin commands that parse, call `Town`, and print (rich tables or --json).

One module per noun (`bead`, `agent`, `mail`, ...) lives here, each with a `register(app)` that adds its
commands. `COMMANDS` names every top-level command and its module: a command's module is imported only when
that command runs (or `--help` lists it), so `gastown bead ready` loads neither Docker, the gateway nor the MCP
SDK. Add a command by adding it in its module's `register()` and its name to `COMMANDS` (a test checks the two
agree). Every `GastownError` becomes
one line on stderr (`error: ...`) and the error's exit code, in `_Group.invoke` and nowhere else; a usage error
(a bad option value, a missing argument) is one such line too, with exit code 2, in `_Group.main`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Any

import typer
import typer.main
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from gastown_mcp.errors import GastownError

__all__ = ["COMMANDS", "build_app", "load_commands", "main"]

# Every top-level command -> the modules (in this package) whose `register(app)` add it and its subcommands
# (`plans` adds `bead import`, `fleet_cmds` adds `agent spawn|stop|logs|ls`), in `--help` order.
COMMANDS: dict[str, tuple[str, ...]] = {
    "init": ("town_cmds",),
    "serve": ("town_cmds",),
    "status": ("town_cmds",),
    "feed": ("town_cmds",),
    "export": ("town_cmds",),
    "nudge": ("messages",),
    "inbox": ("messages",),
    "up": ("fleet_cmds",),
    "down": ("fleet_cmds",),
    "sling": ("fleet_cmds",),
    "doctor": ("fleet_cmds",),
    "backup": ("dogs_cmds",),
    "restore": ("dogs_cmds",),
    "estop": ("dogs_cmds",),
    "thaw": ("dogs_cmds",),
    "usage": ("budget_cmds",),
    "plan": ("plans",),
    "bead": ("beads", "plans"),
    "agent": ("agents", "fleet_cmds"),
    "mail": ("messages",),
    "rig": ("fleet_cmds",),
    "image": ("fleet_cmds",),
    "budget": ("budget_cmds",),
    "mq": ("merges",),
    "convoy": ("plans",),
    "route": ("model_cmds",),
    "model": ("model_cmds",),
    "dashboard": ("dashboard_cmds",),
    "goal": ("goals",),
    "directive": ("goals",),
    "mayor": ("mayor_cmds",),
}


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


def main() -> None:
    from gastown_mcp.cli import stdio_front

    # `serve --as NAME` answers `initialize` before typer or the MCP SDK load (see stdio_front)
    if stdio_front.serve_from_argv(sys.argv[1:]):
        return
    build_app()(prog_name="gastown")
