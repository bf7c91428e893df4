"""The main job end to end: real Docker, real Claude Code in the agent image, the scripted stand-in as model."""

from __future__ import annotations

import pytest
from rich.console import Console

from gastown_mcp.runtime.docker_backend import DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_factory_demo_finishes_every_bead_with_a_commit_per_branch_and_metered_usage(
    docker_runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gastown_mcp.factory_demo import PLAN, run_factory

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = run_factory(Console(quiet=True), build=True)
    assert result.ok, result.beads
    assert len(result.beads) == len(PLAN)
    assert len(result.commits) == len(PLAN)  # one polecat, one branch, one bead
    assert all(len(subjects) == 1 for subjects in result.commits.values()), result.commits
    assert len(result.usage) == len(PLAN)
    for row in result.usage:
        assert row["requests"] > 0 and row["output_tokens"] > 0 and row["cost_usd"] > 0
    assert "stand-in" in result.model
