"""The `gastown` command line: thin commands that parse, call `Town`, and print (rich tables or --json).

One module per noun (`bead`, `agent`, `mail`, ...) lives here, each with a `register(app)` that adds its
commands. `COMMANDS` names every top-level command and its module: a command's module is imported only when
that command runs (or `--help` lists it), so `gastown bead ready` loads neither Docker, the gateway nor the MCP
SDK. Add a command by adding it in its module's `register()` and its name to `COMMANDS` (a test checks the two
agree). Every `GastownError` becomes
one line on stderr (`error: ...`) and the error's exit code, in `_Group.invoke` (in `root`) and nowhere else; a
usage error (a bad option value, a missing argument) is one such line too, with exit code 2, in `_Group.main`.
This package itself loads no typer: `serve --as NAME` over stdio answers `initialize` before it (`stdio_front`),
and `bead ready` and `status` print before it (`quick`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["COMMANDS", "build_app", "main"]

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
    "swarm": ("swarm_cmds",),
}


def build_app() -> typer.Typer:
    """The `gastown` app (typer loads here, not when this package is imported: see `main`)."""
    from gastown_mcp.cli.root import build_app as build

    return build(COMMANDS)


def main() -> None:
    from gastown_mcp.cli import quick

    # `bead ready` and `status` as the operator print before typer, rich or pydantic load (see quick)
    if quick.run(sys.argv[1:]):
        return
    from gastown_mcp.cli import stdio_front

    # `serve --as NAME` answers `initialize` before typer or the MCP SDK load (see stdio_front)
    if stdio_front.serve_from_argv(sys.argv[1:]):
        return
    build_app()(prog_name="gastown")
