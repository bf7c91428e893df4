"""The main job end to end: real Docker, real Claude Code in the agent image, the scripted stand-in as model."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from gastown_mcp.config import Settings
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


def test_when_no_polecat_container_can_start_the_demo_stops_with_blocked_beads_and_says_why(
    docker_runtime: DockerRuntime, agent_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real start failure (runc refuses an open-files limit above the kernel's) on every launch, as on an
    engine with AppArmor on and no apparmor_parser: each bead is blocked after max_attempts, not retried forever,
    the mayor is told why, and no container is left behind."""
    from gastown_mcp import factory_demo
    from gastown_mcp.config import RuntimeSection

    made = factory_demo._settings

    def unstartable(*args: Any) -> Settings:
        settings = made(*args)
        limits = {"polecat": {"nofile": 2_000_000_000.0}}
        return settings.model_copy(update={"runtime": RuntimeSection(limits=limits)})

    monkeypatch.setattr(factory_demo, "_settings", unstartable)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = factory_demo.run_factory(Console(quiet=True), build=False)

    assert not result.ok
    assert "blocked" in result.beads.values() and "done" not in result.beads.values(), result.beads
    problems = "\n".join(result.problems)
    assert "could not start" in problems and "rlimit" in problems, problems
    assert "blocked after 3 failed attempts" in problems, problems  # the default max_attempts
    left = docker_runtime.client.containers.list(all=True, filters={"label": "gastown.role=polecat"})
    assert left == [], [c.name for c in left]
