"""`make demo` end to end: the seed's loop through real containers (Claude Code as mayor and polecats), the
scripted stand-in as every model, each hand-off asserted by the event that shows it."""

from __future__ import annotations

import pytest
from rich.console import Console

from gastown_mcp.runtime.docker_backend import DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_goal_becomes_merged_work_through_overseer_mayor_refinery_polecats_deacon_and_merge_queue(
    docker_runtime: DockerRuntime, agent_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gastown_mcp.loop_demo import HANDOFFS, run_loop
    from gastown_mcp.standin.overseer import SAMPLE

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = run_loop(Console(quiet=True), build=False, live=False)
    assert result.ok, result.problems
    assert result.goal is not None and result.goal.state.value == "achieved"
    events = dict(result.handoffs)
    assert len(events) == len(HANDOFFS) and all(e is not None for e in events.values()), result.handoffs

    def at(what: str) -> int:
        event = events[what]
        assert event is not None
        return event.id

    # Each hand-off happens after the one that causes it.
    chain = [
        "operator states the goal",
        "overseer directs the mayor",
        "the directive wakes the mayor (resumed)",
        "mayor takes the directive",
        "refinery plans: a convoy of beads",
        "mayor reports the plan",
    ]
    assert [at(w) for w in chain] == sorted(at(w) for w in chain)
    assert at("refinery plans: a convoy of beads") < at("scheduler starts a polecat") < at("polecat claims a bead")
    assert at("polecat completes it") < at("deacon's verify commands pass") < at("merge queue lands it on main")
    assert at("merge queue lands it on main") < at("convoy lands") < at("overseer marks the goal achieved")
    assert result.mayor_resumed

    # The plan's beads are all merged, one stand-in commit each on main, after the gates and verify commands.
    assert sorted(title for _, title, _ in result.plan) == sorted(t for _, t, _, _ in SAMPLE)
    assert {state for _, _, state in result.plan} == {"merged"}
    assert len([s for s in result.main if "work by the scripted stand-in" in s]) == len(SAMPLE)
    assert result.verified == len(SAMPLE) and 0 <= result.verified_first_time <= result.verified

    # The overseer asked its model once for the whole run; every other tick cost nothing.
    assert result.overseer_requests == 1 and result.overseer_ticks > 5
    roles = {r.role: r for r in result.roles}
    assert {"overseer", "mayor", "refinery", "polecat"} <= set(roles)
    assert roles["overseer"].requests == 1 and roles["refinery"].requests == 1
    assert all(r.tokens > 0 and r.cost_usd > 0 for r in roles.values())
    assert "stand-in" in result.model

    # The mayor's Claude Code had the town's tools only and its own short system prompt, and asked no more
    # than it needed: nothing while idle; woken by the directive, one plan_create call that takes, plans and
    # reports it, then the end of its turn.
    command = result.mayor_command
    assert command[command.index("--tools") + 1] == "" and "--system-prompt" in command
    assert roles["mayor"].requests == 2
    # The figure the demo is judged by (aim: under 5 %), printed, not asserted: it depends on the polecats' work.
    print(f"overseer + mayor: {result.steering_share:.1%} of the loop's tokens")
