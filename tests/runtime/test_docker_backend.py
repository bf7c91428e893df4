"""The Docker backend on the real engine: launch, status, logs, stop, reaping, orphans."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from waits import until

from gastown_mcp.errors import Conflict, NotFound, RuntimeUnavailable
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import OOM_EXIT_CODE, LaunchSpec, Limits, Mount

pytestmark = pytest.mark.docker


def spec(town: str, agent: str, image: str, *command: str, limits: Limits | None = None) -> LaunchSpec:
    return LaunchSpec(town=town, agent=agent, role="polecat", image=image, command=command, limits=limits or Limits())


def test_a_finished_container_reports_ok_and_its_output(
    runtime: DockerRuntime, agent_image: str, town_name: str
) -> None:
    runtime.launch(spec(town_name, "a1", agent_image, "sh", "-c", "echo hello from $GASTOWN_AGENT"))
    status = runtime.wait(town_name, "a1", timeout_s=30)
    assert (status.state, status.exit_code, status.reason) == ("exited", 0, "ok")
    assert "hello from a1" in runtime.logs(town_name, "a1")


def test_a_failing_command_reports_failed(runtime: DockerRuntime, agent_image: str, town_name: str) -> None:
    runtime.launch(spec(town_name, "a1", agent_image, "sh", "-c", "exit 3"))
    status = runtime.wait(town_name, "a1", timeout_s=30)
    assert (status.exit_code, status.reason) == (3, "failed")


def test_launching_the_same_agent_twice_is_a_conflict(runtime: DockerRuntime, agent_image: str, town_name: str) -> None:
    runtime.launch(spec(town_name, "a1", agent_image, "sleep", "30"))
    with pytest.raises(Conflict, match="already has a container"):
        runtime.launch(spec(town_name, "a1", agent_image, "sleep", "30"))


def test_stopping_a_running_agent_reports_killed(runtime: DockerRuntime, agent_image: str, town_name: str) -> None:
    runtime.launch(spec(town_name, "a1", agent_image, "sleep", "30"))
    assert runtime.status(town_name, "a1").state == "running"
    status = runtime.stop(town_name, "a1", timeout_s=5)
    assert (status.state, status.reason) == ("exited", "killed")


def test_stop_reaches_the_command_through_the_entrypoint_so_it_can_exit_cleanly(
    runtime: DockerRuntime, agent_image: str, town_name: str
) -> None:
    trap = 'trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.1; done'
    runtime.launch(spec(town_name, "a1", agent_image, "sh", "-c", trap))
    until(lambda: "ready" in runtime.logs(town_name, "a1"), 30, "the command to set its TERM trap")
    status = runtime.stop(town_name, "a1", timeout_s=20)
    assert (status.exit_code, status.reason) == (0, "ok")  # not 137: SIGKILL after the timeout never came
    assert "got TERM" in runtime.logs(town_name, "a1")


def test_an_oom_kill_is_reported_by_the_entrypoint_and_any_other_sigkill_is_not(
    runtime: DockerRuntime, agent_image: str, town_name: str
) -> None:
    hog = "chunks = [bytearray(32 * 1024 * 1024) for _ in range(64)]"
    runtime.launch(spec(town_name, "hog", agent_image, "python3", "-c", hog, limits=Limits(memory_mb=64)))
    status = runtime.wait(town_name, "hog", timeout_s=60)
    assert (status.exit_code, status.reason) == (OOM_EXIT_CODE, "oom")
    assert "memory limit" in runtime.logs(town_name, "hog")

    runtime.launch(spec(town_name, "self-kill", agent_image, "sh", "-c", "kill -9 $$"))
    status = runtime.wait(town_name, "self-kill", timeout_s=30)
    assert (status.exit_code, status.reason) == (137, "killed")


def test_the_host_stops_a_container_past_its_deadline(runtime: DockerRuntime, agent_image: str, town_name: str) -> None:
    command = ("sh", "-c", "echo started; exec sleep 300")
    runtime.launch(spec(town_name, "a1", agent_image, *command, limits=Limits(wallclock_s=600)))
    # The entrypoint forwards the deadline's SIGALRM once its command runs; before that it would simply die.
    until(lambda: "started" in runtime.logs(town_name, "a1"), 30, "the command to start")
    assert runtime.reap_expired(town_name) == []
    reaped = runtime.reap_expired(town_name, now=time.time() + 3600)
    assert [(s.agent, s.reason) for s in reaped] == [("a1", "wallclock")]
    assert runtime.status(town_name, "a1").reason == "wallclock"


def test_the_entrypoint_ends_a_command_at_its_own_deadline_even_one_that_ignores_term(
    runtime: DockerRuntime, agent_image: str, town_name: str
) -> None:
    stubborn = ("sh", "-c", 'trap "echo ignoring TERM" TERM; while :; do sleep 0.1; done')
    runtime.launch(spec(town_name, "a1", agent_image, *stubborn, limits=Limits(wallclock_s=1)))
    status = runtime.wait(town_name, "a1", timeout_s=60)
    assert (status.exit_code, status.reason) == (124, "wallclock")
    logs = runtime.logs(town_name, "a1")
    assert "ignoring TERM" in logs and "wall-clock limit" in logs  # TERM first, KILL after the grace


def test_time_a_container_spends_paused_does_not_count_against_its_own_wall_clock(
    runtime: DockerRuntime, agent_image: str, town_name: str
) -> None:
    command = ("sh", "-c", "echo started; exec sleep 300")
    runtime.launch(spec(town_name, "a1", agent_image, *command, limits=Limits(wallclock_s=6)))
    until(lambda: "started" in runtime.logs(town_name, "a1"), 30, "the command to start")
    assert runtime.pause(town_name, "a1")
    time.sleep(9)  # frozen past its whole limit, as an emergency stop may hold it
    assert runtime.unpause(town_name, "a1")
    time.sleep(1)
    assert runtime.status(town_name, "a1").state == "running"  # the frozen seconds did not count
    status = runtime.wait(town_name, "a1", timeout_s=60)
    assert (status.exit_code, status.reason) == (124, "wallclock")  # the rest of its limit did


def test_an_unknown_agent_is_not_found_and_removing_it_is_harmless(runtime: DockerRuntime, town_name: str) -> None:
    with pytest.raises(NotFound, match="spawn it first"):
        runtime.status(town_name, "ghost")
    runtime.remove(town_name, "ghost")


def test_containers_the_town_no_longer_knows_are_found_and_cleaned_up(
    runtime: DockerRuntime, agent_image: str, town_name: str
) -> None:
    for agent in ("known", "orphan"):
        runtime.launch(spec(town_name, agent, agent_image, "sleep", "30"))
    orphans = runtime.find_orphans(town_name, known_agents=["known"])
    assert [o.agent for o in orphans] == ["orphan"]
    assert runtime.cleanup(town_name, agents=[o.agent for o in orphans]) == ["orphan"]
    assert [s.agent for s in runtime.list(town_name)] == ["known"]


def test_a_container_that_cannot_start_is_removed_and_the_error_says_where_to_look(
    runtime: DockerRuntime, agent_image: str, town_name: str, tmp_path: Path
) -> None:
    # A file mounted over a directory fails in runc at start, after the container was created: the same point
    # where an engine with AppArmor on but no apparmor_parser refuses every container.
    afile = tmp_path / "afile"
    afile.write_text("x")
    bad = dataclasses.replace(
        spec(town_name, "a1", agent_image, "true"), mounts=(Mount(afile, "/usr", read_only=True),)
    )
    for _ in range(2):  # a retry meets no leftover "created" container in its way
        with pytest.raises(RuntimeUnavailable, match=r"could not start.*gastown doctor --sandbox"):
            runtime.launch(bad)
        assert runtime.list(town_name) == []
    runtime.launch(spec(town_name, "a1", agent_image, "true"))
    assert runtime.wait(town_name, "a1", timeout_s=30).reason == "ok"


def test_the_image_carries_claude_code_on_the_path(runtime: DockerRuntime, agent_image: str, town_name: str) -> None:
    runtime.launch(spec(town_name, "a1", agent_image, "claude", "--version"))
    status = runtime.wait(town_name, "a1", timeout_s=60)
    assert status.reason == "ok", runtime.logs(town_name, "a1")
    assert "Claude Code" in runtime.logs(town_name, "a1")


def test_launching_an_image_that_is_not_built_says_how_to_build_it(runtime: DockerRuntime, town_name: str) -> None:
    with pytest.raises(NotFound, match="gastown image build"):
        runtime.launch(spec(town_name, "a1", "gastown-agent:no-such-tag", "true"))


def test_the_default_command_runs_claude_code_headless(
    runtime: DockerRuntime, agent_image: str, town_name: str
) -> None:
    # Claude Code does try these: port 1 on the container's own loopback refuses at once, and nothing is sent
    # anywhere else (the container has no network).
    env = {
        "GASTOWN_MCP_URL": "http://127.0.0.1:1/mcp",
        "GASTOWN_TOKEN": "t",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
    }
    runtime.launch(LaunchSpec(town=town_name, agent="a1", role="polecat", image=agent_image, env=env))
    runtime.wait(town_name, "a1", timeout_s=60)
    # No model is reachable here; what matters is that Claude Code started headless and reported a result.
    assert '"type":"result"' in runtime.logs(town_name, "a1")
