"""The factory alone (`make demo-factory`) end to end: real Docker, real Claude Code in the agent image, the
scripted stand-in as model."""

from __future__ import annotations

import os

import pytest
from rich.console import Console

from gastown_mcp.runtime.docker_backend import DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_factory_demo_lands_every_bead_on_main_through_the_gates_and_reworks_a_conflict(
    docker_runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gastown_mcp.factory_demo import GATES, PLAN, SHARED, run_factory
    from gastown_mcp.models import MergeState

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = run_factory(Console(quiet=True), build=True)
    assert result.ok, (result.beads, result.problems)
    assert len(result.beads) == len(PLAN)
    assert result.merged == len(PLAN)
    landed = [s for s in result.main if "work by the scripted stand-in" in s]
    assert len(landed) == len(PLAN) and result.main[-1] == "initial", result.main  # one commit per bead on main

    # The two beads that append to one file: one lands, the other conflicts, is handed back, and lands after a
    # second polecat rebases it onto main.
    assert len(result.handed_back) == 1, result.requests
    back = result.handed_back[0]
    assert SHARED in back.detail and result.reworked == {back.bead_id}, result.requests
    merged = [r for r in result.requests if r.state is MergeState.merged]
    assert sorted(r.bead_id for r in merged) == sorted(result.beads)  # each bead landed, once
    rework = next(r for r in merged if r.bead_id == back.bead_id)
    assert rework.agent != back.agent and rework.base != back.base  # a fresh polecat, on the newer main
    notes = [line for line in result.shared.splitlines() if line.startswith("- ")]  # `git show main:NOTES.md`
    assert len(notes) == 2, result.shared
    for item in (p for p in PLAN if p.file == SHARED):
        assert any(item.title in line for line in notes), result.shared

    # Every landing went through the rig's test suite, and main's final tree passes it too.
    assert result.gates == GATES and result.ungated == [] and all(r.gate_runs >= 1 for r in merged)
    assert result.main_gates == "passed"

    assert len(result.usage) == len(PLAN) + 1  # one polecat per bead, plus the one that reworked the conflict
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
    town = f"demo{os.getpid() % 100000}"  # the demo's town, run in this process (other towns may share the engine)
    left = docker_runtime.client.containers.list(all=True, filters={"label": f"gastown.town={town}"})
    assert left == [], [c.name for c in left]
