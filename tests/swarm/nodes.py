"""A real multi-node Docker Swarm on this machine, for the swarm tests and `benchmarks/bench_swarm.py`: this
engine is the manager, and two worker nodes are containers running their own Docker engine (Debian's docker.io,
`Dockerfile.node`) on an internal network made here, so the nodes reach this machine and nothing else. The
agent image reaches each node by `gastown swarm load-image` (`docker save` here, `docker load` in the node,
then a check through the swarm). Everything is removed afterwards, and this engine leaves the swarm it joined.

The nodes run with every capability this machine grants but CAP_SYS_RESOURCE (which it does not grant, so
`--privileged` fails here), unconfined seccomp and AppArmor, and the host's cgroup tree, which an engine inside
a container needs on cgroup v1. Every wait is on a real condition (an engine answering, a node ready) with a
deadline generous enough for a loaded machine: a fast machine never waits for it.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import docker
from typer.testing import CliRunner, Result

from gastown_mcp.cli import build_app
from gastown_mcp.runtime.swarm_backend import SwarmRuntime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the shared bounded wait
from waits import until

HERE = Path(__file__).resolve().parent
NODE_IMAGE = "gastown-swarm-node:latest"
NODE_MEMORY = "2g"
# How the town reaches a node's own engine here (`ssh {hostname} docker` on real machines).
NODE_DOCKER = "docker exec {hostname} docker"
VIA = "docker exec -i {hostname} docker load"  # `gastown swarm load-image`'s way onto a node
ENGINE_START_S = 180.0
NODES_READY_S = 180.0


class SwarmUnavailable(Exception):
    """This machine cannot make a swarm (the engine is in one already, or the node image cannot be built)."""


@dataclass
class Swarm:
    runtime: SwarmRuntime
    network: str
    manager_address: str
    workers: list[str]  # node container names = their swarm hostnames
    image: str  # the agent image, under a tag of this swarm's own

    def kill(self, node: str) -> None:
        """The machine dies: its engine and every agent on it stop at once."""
        subprocess.run(["docker", "kill", node], check=True, capture_output=True)


def docker_cli(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:4])} failed: {done.stderr.decode(errors='replace')[-800:]}")
    return done.stdout.decode().strip()


def gastown(*args: str) -> Result:
    """The `gastown` command line, in this process."""
    return CliRunner().invoke(build_app(), list(args), env={"GASTOWN_TOWN": "", "COLUMNS": "200"})


@contextlib.contextmanager
def local_swarm(client: docker.DockerClient, agent_image: str) -> Iterator[Swarm]:
    """Two worker nodes joined to a swarm this engine manages, the agent image loaded on both."""
    if (client.info().get("Swarm") or {}).get("LocalNodeState") != "inactive":
        raise SwarmUnavailable(
            "this Docker engine is already part of a swarm; the swarm tests make (and leave) their own"
        )
    build = subprocess.run(
        ["docker", "build", "-q", "-t", NODE_IMAGE, "-f", str(HERE / "Dockerfile.node"), str(HERE)],
        capture_output=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )
    if build.returncode != 0:
        raise SwarmUnavailable(f"the swarm node image cannot be built: {build.stderr.decode(errors='replace')[-500:]}")
    tag = secrets.token_hex(3)
    network = f"gastown-swarmtest-{tag}"
    workers = [f"gastown-swarmtest-{tag}-node{i}" for i in (1, 2)]
    # The agent image under a tag of its own: a shared machine may rebuild `gastown-agent:latest` meanwhile
    # (another checkout, other inputs), and a tag that moves names an image the nodes never got.
    image = f"gastown-swarmtest-agent:{tag}"
    client.images.get(agent_image).tag(image)
    had_gwbridge = bool(docker_cli("network", "ls", "-q", "--filter", "name=^docker_gwbridge$"))
    joined = False
    try:
        docker_cli("network", "create", "--internal", "--label", "gastown.swarmtest=1", network)
        manager = docker_cli("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network)
        docker_cli("swarm", "init", "--advertise-addr", manager, "--listen-addr", f"{manager}:2377")
        joined = True
        token = docker_cli("swarm", "join-token", "-q", "worker")
        for node in workers:
            docker_cli(
                "run", "-d", "--name", node, "--hostname", node, "--network", network, "--memory", NODE_MEMORY,
                "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                "--security-opt", "systempaths=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--mount", f"type=volume,source={node},target=/var/lib/docker", "--label", "gastown.swarmtest=1",
                NODE_IMAGE,
            )  # fmt: skip
        for node in workers:
            until(partial(docker_cli, "exec", node, "docker", "info", check=False), ENGINE_START_S, f"engine {node}")
            template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
            address = docker_cli("inspect", "-f", template, node)
            # Under load a join can outlast the CLI's own wait ("will continue in the background"): the nodes'
            # readiness below is what counts.
            docker_cli("exec", node, "docker", "swarm", "join", "--token", token, "--advertise-addr", address,
                       f"{manager}:2377", check=False)  # fmt: skip
        runtime = SwarmRuntime(
            client, placement=("node.role==worker",), grace_s=2, relay_image=image, node_docker=NODE_DOCKER
        )
        until(lambda: sum(n["state"] == "ready" for n in runtime.nodes()) == 3, NODES_READY_S, "three ready nodes")
        # The operator's command, with the nodes' engines reached by `docker exec` instead of ssh.
        loaded = gastown("swarm", "load-image", "--image", image, "--via", VIA)
        assert loaded.exit_code == 0, loaded.output
        yield Swarm(runtime, network, manager, workers, image)
    finally:
        for node in workers:
            docker_cli("rm", "-f", "-v", node, check=False)
            docker_cli("volume", "rm", "-f", node, check=False)
        if joined:
            docker_cli("swarm", "leave", "--force", check=False)
        docker_cli("network", "rm", network, check=False)
        docker_cli("image", "rm", image, check=False)  # the tag (the image too if nothing else names it)
        if not had_gwbridge:
            with contextlib.suppress(AssertionError):
                docker_cli("network", "rm", "docker_gwbridge", check=False)
