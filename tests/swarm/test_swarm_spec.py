"""The swarm service an agent gets, and how its task reads back (runtime/swarm_spec.py): no engine needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gastown_mcp.cli import build_app
from gastown_mcp.errors import Forbidden, InvalidInput
from gastown_mcp.runtime.docker_backend import exit_reason
from gastown_mcp.runtime.protocol import LaunchSpec, Limits, Mount
from gastown_mcp.runtime.swarm_freeze import node_command
from gastown_mcp.runtime.swarm_selftest import may_place
from gastown_mcp.runtime.swarm_spec import WORK_REPO, service_spec, task_status

SPEC = LaunchSpec(
    town="t",
    agent="nux",
    role="polecat",
    command=("python3", "-c", "print(1)"),
    env={"GASTOWN_GIT_URL": "http://town:1/git/nux.git", "GASTOWN_BRANCH": "polecat/nux/gt-1"},
    network="gastown-t",
    limits=Limits(memory_mb=512, cpus=0.5, pids=64, nofile=1024, tmp_mb=32, home_mb=64, wallclock_s=60),
    generation=3,
)


def test_a_service_has_the_containment_of_a_local_container() -> None:
    made = service_spec(SPEC, "sha256:abc", "net-nux", now=1000.0, placement=["node.role==worker"], work_mb=128)
    task = made["task_template"]
    container = task["ContainerSpec"]
    assert container["Image"] == "sha256:abc"  # by ID: a node never asks a registry
    assert container["Command"][:2] == ["/usr/bin/setpriv", "--no-new-privs"]
    assert container["User"] == "61000:61000" and container["ReadOnly"] and container["Init"]
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 1024}]
    assert container["DNSConfig"]["Nameservers"] == ["127.0.0.1"]
    sizes = {m["Target"]: m["TmpfsOptions"]["SizeBytes"] for m in container["Mounts"]}
    assert sizes == {"/tmp": 32 * 2**20, "/run/gastown-home": 64 * 2**20, WORK_REPO: 128 * 2**20}
    assert container["Args"][-3:] == ["python3", "-c", "print(1)"]
    assert task["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 512 * 2**20, "Pids": 64}
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["Placement"]["Constraints"] == ["node.role==worker"]
    assert task["Networks"] == [{"Target": "net-nux"}]
    assert made["labels"]["gastown.deadline"] == "1060.000" and made["labels"]["gastown.generation"] == "3"
    assert "ANTHROPIC_API_KEY" not in " ".join(container["Env"])


def test_host_paths_are_refused_on_the_swarm() -> None:
    spec = LaunchSpec(town="t", agent="nux", role="polecat", network="n", mounts=(Mount(Path("/srv/x")),))
    with pytest.raises(Forbidden, match="host paths cannot be mounted"):
        service_spec(spec, "sha256:abc", "n", now=0)


LABELS = {"gastown.town": "t", "gastown.agent": "nux", "gastown.role": "polecat", "gastown.deadline": "100"}


def task(state: str, code: int | None = None, node: str = "n1", at: str = "1970-01-01T00:00:50Z") -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Timestamp": at}
    if code is not None:
        status["ContainerStatus"] = {"ExitCode": code}
    return {"Status": status, "NodeID": node}


@pytest.mark.parametrize(
    ("raw", "code", "up", "state", "reason"),
    [
        ("running", None, True, "running", None),
        ("preparing", None, True, "created", None),
        ("running", None, False, "exited", "killed"),  # its node is down: gone with it
        ("complete", 0, True, "exited", "ok"),
        ("failed", 1, True, "exited", "failed"),
        ("failed", 251, True, "exited", "oom"),
        ("failed", 124, True, "exited", "wallclock"),
        ("shutdown", 143, True, "exited", "killed"),
        ("rejected", None, True, "exited", "failed"),
    ],
)
def test_a_task_reads_as_the_local_backend_would_say_it(
    raw: str, code: int | None, up: bool, state: str, reason: str | None
) -> None:
    status = task_status(LABELS, "svc", task(raw, code), {"n1": up}, exit_reason)
    assert (status.state, status.reason) == (state, reason)
    assert status.agent == "nux" and status.container_id == "svc"


def test_a_task_that_ends_after_its_deadline_reads_wallclock() -> None:
    late = task("shutdown", 143, at="1970-01-01T00:02:00Z")
    assert task_status(LABELS, "svc", late, {"n1": True}, exit_reason).reason == "wallclock"


def test_doctor_checks_the_nodes_placement_allows_and_no_fewer() -> None:
    worker = {"id": "n1", "hostname": "w1", "role": "worker"}
    manager = {"id": "n0", "hostname": "m", "role": "manager"}
    assert may_place(worker, ["node.role==worker"]) and not may_place(manager, ["node.role==worker"])
    assert not may_place(worker, ["node.role == worker", "node.hostname!=w1"])
    assert may_place(manager, [])
    # Constraints it cannot judge (labels) count as met: the checks run on every node that might take agents.
    assert may_place(worker, ["node.labels.gpu==yes"])


@pytest.mark.parametrize("via", ["ssh {host} docker load", "ssh '{hostname} docker load", ""])
def test_load_image_refuses_a_bad_load_command_before_touching_any_engine(via: str) -> None:
    done = CliRunner().invoke(build_app(), ["swarm", "load-image", "--via", via], env={"GASTOWN_TOWN": ""})
    assert done.exit_code != 0
    assert "--via" in done.output and "ssh {hostname} docker load" in done.output


def test_a_node_docker_command_is_checked_when_the_runtime_is_made_not_at_an_emergency_stop() -> None:
    assert node_command("ssh {hostname} docker", "w1", "10.0.0.5") == ["ssh", "w1", "docker"]
    assert node_command("docker -H ssh://gastown@{address}", "w1", "10.0.0.5")[-1] == "ssh://gastown@10.0.0.5"
    with pytest.raises(InvalidInput, match="swarm_node_docker"):
        node_command("ssh {host} docker", "w1", "10.0.0.5")
