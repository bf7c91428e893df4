"""A real multi-node Docker Swarm on this machine: this engine is the manager, and two worker nodes are
containers running their own Docker engine (Debian's docker.io, `Dockerfile.node`) on an internal network the
fixture creates, so the nodes reach this machine and nothing else. The agent image reaches each node by
`gastown swarm load-image` (`docker save` here, `docker load` in the node, then a check
through the swarm). Everything is removed afterwards, and this engine leaves the swarm it joined.

The nodes run with every capability this machine grants but CAP_SYS_RESOURCE (which it does not grant, so
`--privileged` fails here), unconfined seccomp and AppArmor, and the host's cgroup tree, which an engine inside
a container needs on cgroup v1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result
from waits import until

from gastown_mcp.cli import build_app
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.swarm_backend import SwarmRuntime

HERE = Path(__file__).resolve().parent
NODE_IMAGE = "gastown-swarm-node:latest"
NODE_MEMORY = "2g"
VIA = "docker exec -i {hostname} docker load"  # how `gastown swarm load-image` reaches a node's engine here


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the swarm tests must run)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Swarm:
    runtime: SwarmRuntime
    network: str
    manager_address: str
    workers: list[str]  # node container names = their swarm hostnames

    def kill(self, node: str) -> None:
        """The machine dies: its engine and every agent on it stop at once."""
        subprocess.run(["docker", "kill", node], check=True, capture_output=True)


def docker(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:4])} failed: {done.stderr.decode(errors='replace')[-800:]}")
    return done.stdout.decode().strip()


def gastown(*args: str) -> Result:
    """The `gastown` command line, in this process."""
    return CliRunner().invoke(build_app(), list(args), env={"GASTOWN_TOWN": "", "COLUMNS": "200"})


@pytest.fixture(scope="session")
def swarm(docker_runtime: DockerRuntime, agent_image: str, root: None) -> Iterator[Swarm]:
    client = docker_runtime.client
    if (client.info().get("Swarm") or {}).get("LocalNodeState") != "inactive":
        unavailable("this Docker engine is already part of a swarm; the swarm tests make (and leave) their own")
    build = subprocess.run(
        ["docker", "build", "-q", "-t", NODE_IMAGE, "-f", str(HERE / "Dockerfile.node"), str(HERE)],
        capture_output=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )
    if build.returncode != 0:
        unavailable(f"the swarm node image cannot be built: {build.stderr.decode(errors='replace')[-500:]}")
    tag = secrets.token_hex(3)
    network = f"gastown-swarmtest-{tag}"
    workers = [f"gastown-swarmtest-{tag}-node{i}" for i in (1, 2)]
    had_gwbridge = bool(docker("network", "ls", "-q", "--filter", "name=^docker_gwbridge$"))
    joined = False
    try:
        docker("network", "create", "--internal", "--label", "gastown.swarmtest=1", network)
        manager = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network)
        docker("swarm", "init", "--advertise-addr", manager, "--listen-addr", f"{manager}:2377")
        joined = True
        token = docker("swarm", "join-token", "-q", "worker")
        for node in workers:
            docker(
                "run", "-d", "--name", node, "--hostname", node, "--network", network, "--memory", NODE_MEMORY,
                "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                "--security-opt", "systempaths=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--mount", f"type=volume,source={node},target=/var/lib/docker", "--label", "gastown.swarmtest=1",
                NODE_IMAGE,
            )  # fmt: skip
        for node in workers:
            until(lambda n=node: docker("exec", n, "docker", "info", check=False), 60, f"the engine in {node}")
            template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
            address = docker("inspect", "-f", template, node)
            docker("exec", node, "docker", "swarm", "join", "--token", token, "--advertise-addr", address,
                   f"{manager}:2377")  # fmt: skip
        runtime = SwarmRuntime(client, placement=("node.role==worker",), grace_s=2)
        until(lambda: sum(n["state"] == "ready" for n in runtime.nodes()) == 3, 60, "three ready nodes")
        # The operator's command, with the nodes' engines reached by `docker exec` instead of ssh.
        loaded = gastown(
            "swarm", "load-image", "--image", agent_image, "--via", "docker exec -i {hostname} docker load"
        )
        assert loaded.exit_code == 0, loaded.output
        yield Swarm(runtime, network, manager, workers)
    finally:
        for node in workers:
            docker("rm", "-f", "-v", node, check=False)
            docker("volume", "rm", "-f", node, check=False)
        if joined:
            docker("swarm", "leave", "--force", check=False)
        docker("network", "rm", network, check=False)
        if not had_gwbridge:
            with contextlib.suppress(AssertionError):
                docker("network", "rm", "docker_gwbridge", check=False)
