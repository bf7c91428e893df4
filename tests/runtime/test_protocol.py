"""LaunchSpec validation, exit reasons and error translation: no engine needed."""

from __future__ import annotations

import docker
import pytest

from gastown_mcp.errors import Forbidden, InvalidInput, RuntimeUnavailable
from gastown_mcp.runtime.docker_backend import DockerRuntime, exit_reason, run_kwargs
from gastown_mcp.runtime.protocol import LaunchSpec, Limits, Mount, Runtime


def test_a_provider_key_in_the_environment_is_refused() -> None:
    with pytest.raises(Forbidden, match="gateway"):
        LaunchSpec(town="t", agent="a", role="polecat", env={"ANTHROPIC_API_KEY": "x"})


def test_a_value_that_looks_like_an_anthropic_key_is_refused_under_any_name() -> None:
    with pytest.raises(Forbidden):
        LaunchSpec(town="t", agent="a", role="polecat", env={"INNOCENT": "sk-ant-api03-abc"})


def test_the_docker_socket_cannot_be_mounted() -> None:
    from pathlib import Path

    with pytest.raises(Forbidden):
        LaunchSpec(town="t", agent="a", role="polecat", mounts=[Mount(Path("/var/run/docker.sock"))])


def test_names_with_slashes_or_capitals_are_refused() -> None:
    with pytest.raises(InvalidInput):
        LaunchSpec(town="t", agent="../a", role="polecat")


def test_limits_must_be_positive() -> None:
    with pytest.raises(InvalidInput):
        Limits(memory_mb=0)


def test_every_container_gets_the_hardening_options() -> None:
    spec = LaunchSpec(town="t", agent="a", role="polecat", limits=Limits(memory_mb=300, cpus=0.5, pids=99))
    kw = run_kwargs(spec, now=1000.0)
    assert kw["user"] == "61000:61000"
    assert kw["read_only"] is True and kw["init"] is True and kw["privileged"] is False
    assert kw["cap_drop"] == ["ALL"] and kw["security_opt"] == ["no-new-privileges"]
    assert kw["mem_limit"] == kw["memswap_limit"] == "300m"
    assert kw["nano_cpus"] == 500_000_000 and kw["pids_limit"] == 99
    assert kw["network_mode"] == "none"
    assert set(kw["tmpfs"]) == {"/tmp", "/home/agent"} and all("size=" in v for v in kw["tmpfs"].values())
    assert kw["labels"]["gastown.town"] == "t" and kw["labels"]["gastown.agent"] == "a"
    assert float(kw["labels"]["gastown.deadline"]) == 1000.0 + spec.limits.wallclock_s


@pytest.mark.parametrize(
    ("code", "oom", "finished", "reason"),
    [
        (0, False, 1.0, "ok"),
        (137, True, 1.0, "oom"),
        (251, False, 1.0, "oom"),  # the entrypoint saw the OOM kill that Docker's flag missed
        (137, False, 1.0, "killed"),
        (124, False, 1.0, "wallclock"),
        (143, False, 1.0, "killed"),
        (143, False, 99.0, "wallclock"),
        (1, False, 1.0, "failed"),
    ],
)
def test_exit_reasons_follow_oom_then_success_then_wall_clock(
    code: int, oom: bool, finished: float, reason: str
) -> None:
    assert exit_reason(code, oom, finished, deadline=50.0) == reason


def test_an_unreachable_engine_says_how_to_start_docker() -> None:
    client = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    runtime = DockerRuntime(client)
    assert isinstance(runtime, Runtime)
    with pytest.raises(RuntimeUnavailable, match=r"install-docker\.sh"):
        runtime.list("t")
