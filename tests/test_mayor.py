"""`gastown mayor start` without a running town: the mayor is recorded as intent (no rig, so no worktree of its
own), once; an operator-run mayor is not replaced; only roles that may spawn can start it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gastown_mcp.cli import build_app
from gastown_mcp.errors import Conflict, Forbidden
from gastown_mcp.models import Agent, AgentState, Role
from gastown_mcp.town import Town


def test_the_mayor_is_requested_once_with_no_rig_and_no_worktree(
    town: Town, operator: Agent, add_agent: Callable[..., Agent]
) -> None:
    mayor = town.mayor_start(operator)
    assert mayor.name == "mayor" and mayor.role is Role.mayor and mayor.rig is None
    assert mayor.state is AgentState.requested and mayor.launching
    assert "worktree" not in mayor.metadata and "hook" not in mayor.metadata
    with pytest.raises(Conflict, match="already requested"):
        town.mayor_start(operator)
    with pytest.raises(Forbidden):
        town.mayor_start(add_agent("nux", Role.polecat), "mayor-2")
    add_agent("hand", Role.mayor)
    with pytest.raises(Conflict, match="a mayor you run yourself"):
        town.mayor_start(operator, "hand")


def test_the_cli_requests_the_mayor_for_the_next_gastown_up(tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    town_dir = tmp_path / "t"
    assert runner.invoke(app, ["init", str(town_dir), "--name", "t"]).exit_code == 0
    started = runner.invoke(app, ["mayor", "start", "--town", str(town_dir)])
    assert started.exit_code == 0, started.output
    assert "next `gastown up` starts it" in started.output
    again = runner.invoke(app, ["mayor", "start", "--town", str(town_dir)])
    assert again.exit_code != 0 and "already" in again.output
