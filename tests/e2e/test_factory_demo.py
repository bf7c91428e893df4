"""The main job end to end: real Docker, real Claude Code in the agent image, the scripted stand-in as model."""

from __future__ import annotations

import pytest
from rich.console import Console

from gastown_mcp.runtime.docker_backend import DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_factory_demo_lands_every_bead_on_main_with_metered_usage(
    docker_runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gastown_mcp.factory_demo import PLAN, run_factory

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = run_factory(Console(quiet=True), build=True)
    assert result.ok, result.beads
    assert len(result.beads) == len(PLAN)
    assert result.merged == len(PLAN)
    landed = [s for s in result.main if "work by the scripted stand-in" in s]
    assert len(landed) == len(PLAN) and result.main[-1] == "initial", result.main  # one commit per bead on main
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
    from gastown_mcp.config import RuntimeSection
    from gastown_mcp.factory_demo import run_factory

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    unstartable = RuntimeSection(limits={"polecat": {"nofile": 2_000_000_000.0}})
    result = run_factory(Console(quiet=True), build=False, runtime=unstartable)

    assert not result.ok
    assert "blocked" in result.beads.values() and "done" not in result.beads.values(), result.beads
    problems = "\n".join(result.problems)
    assert "could not start" in problems and "rlimit" in problems, problems
    assert "blocked after 3 failed attempts" in problems, problems  # the default max_attempts
    left = docker_runtime.client.containers.list(all=True, filters={"label": "gastown.role=polecat"})
    assert left == [], [c.name for c in left]
