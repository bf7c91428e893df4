"""What `gastown` loads to start: a command's module only when it runs, and no heavy library for a read.

The root command loads each command's module when that command is asked for (`COMMANDS` in
gastown_mcp/cli/__init__.py); these tests keep that table equal to what the modules register, and keep
`bead ready` and `status` free of Docker, HTTP, model and server libraries.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer.testing import CliRunner

import gastown_mcp.cli
from gastown_mcp.cli import COMMANDS, build_app

GASTOWN = str(Path(sys.executable).with_name("gastown"))
HEAVY = ("docker", "httpx", "httpx2", "anthropic", "uvicorn", "starlette", "mcp", "mcp_types", "sqlite_utils")


def _register_all(monkeypatch: Any) -> tuple[typer.Typer, dict[int, set[str]]]:
    """Every module's `register()` on one app, and for each typer app (by id) the modules that added to it."""
    adders: dict[int, set[str]] = {}
    for method in ("command", "add_typer"):
        original = getattr(typer.Typer, method)

        def recording(self: typer.Typer, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals["__name__"].rsplit(".", 1)[-1]
            adders.setdefault(id(self), set()).add(caller)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(typer.Typer, method, recording)
    app = typer.Typer()
    for info in pkgutil.iter_modules(gastown_mcp.cli.__path__):
        module = importlib.import_module(f"gastown_mcp.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(app)
    return app, adders


def test_the_command_table_names_every_command_and_every_module_adding_to_it(monkeypatch: Any) -> None:
    app, adders = _register_all(monkeypatch)
    commands = {c.name for c in app.registered_commands}
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    assert set(commands) | set(groups) == set(COMMANDS), "list the command in COMMANDS (gastown_mcp/cli/__init__.py)"
    for name, sub in groups.items():
        # a module that adds a subcommand to another module's group (in its `register()`) must load with it
        pending, added_by = [sub], set()
        while pending:
            one = pending.pop()
            added_by |= adders.get(id(one), set())
            pending += [g.typer_instance for g in one.registered_groups]
        assert added_by <= set(COMMANDS[name]), f"`gastown {name}` needs modules {sorted(added_by)} in COMMANDS"


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(build_app(), ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert set(COMMANDS) <= listed


def test_a_mistyped_command_gets_a_suggestion_from_the_whole_table() -> None:
    result = CliRunner().invoke(build_app(), ["convy"])
    assert result.exit_code == 2
    assert "No such command 'convy'. Did you mean 'convoy'?" in result.stderr


def _loaded_by(argv: list[str], town: Path, code_ok: int = 0) -> tuple[str, set[str]]:
    """Run `gastown ARGV` in a fresh interpreter; its output and the top-level packages it imported."""
    code = (
        "import sys, contextlib\n"
        f"sys.argv = ['gastown', *{argv!r}]\n"
        "from gastown_mcp.cli import main\n"
        "code = 0\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('\\nLOADED', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "GASTOWN_TOWN": str(town), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == code_ok, done.stderr
    output, _, loaded = done.stdout.rpartition("\nLOADED ")
    return output, set(loaded.split())


def test_read_commands_load_no_docker_http_model_or_server_library(tmp_path: Path) -> None:
    town = tmp_path / "town"
    subprocess.run([GASTOWN, "init", str(town)], check=True, capture_output=True)
    subprocess.run([GASTOWN, "bead", "create", "Fix the flaky test", "--town", str(town)], check=True)
    for argv in (["bead", "ready"], ["status"], ["bead", "ready", "--json"]):
        output, loaded = _loaded_by(argv, town)
        assert "Fix the flaky test" in output or "ready" in output, output
        assert sorted(loaded & set(HEAVY)) == [], f"gastown {' '.join(argv)} imported them"
    # the same check sees a heavy import when there is one
    _, loaded = _loaded_by(["route", "list"], town)
    assert "httpx2" in loaded or "httpx" in loaded


def test_bead_ready_and_status_load_no_cli_framework_or_models(tmp_path: Path) -> None:
    """The quick path (gastown_mcp/cli/quick.py): not even typer, click, rich or pydantic."""
    town = tmp_path / "town"
    subprocess.run([GASTOWN, "init", str(town)], check=True, capture_output=True)
    subprocess.run([GASTOWN, "bead", "create", "Fix the flaky test", "--town", str(town)], check=True)
    subprocess.run([GASTOWN, "agent", "add", "mayor", "--role", "mayor", "--town", str(town)], check=True)
    framework = {"typer", "click", "rich", "pydantic", "pydantic_core", *HEAVY}
    forms = (["bead", "ready"], ["bead", "ready", "-n", "5", "--json"], ["status"], ["status", "--json"])
    for argv in (*forms, ["bead", "ready", "--as", "mayor"], ["status", "--as", "mayor"]):
        output, loaded = _loaded_by(argv, town)
        assert "Fix the flaky test" in output or "ready" in output, output
        assert sorted(loaded & framework) == [], f"gastown {' '.join(argv)} imported them"
    # what it does not take goes to the typer command, and the check sees that
    _, loaded = _loaded_by(["bead", "ready", "--limit", "0"], town, code_ok=2)
    assert {"typer", "pydantic"} <= loaded
