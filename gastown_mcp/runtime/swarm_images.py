"""The agent image onto swarm nodes without a registry (`gastown swarm load-image`).

The manager's engine saves the image once per node and streams it into a command that loads it on that node,
by default `ssh HOSTNAME docker load` (any command that reads an image archive on stdin and loads it on the
node will do: `docker -H ssh://user@{address} load`, or `docker exec -i {hostname} docker load` for nodes
that are containers on this machine). Then the swarm itself proves the node has it: a one-shot service
naming the image by ID, placed on that node, must start there (a node without it rejects the task). Services
name images by ID (`swarm_backend.py`), so what was loaded is exactly what agents run.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import docker
import docker.errors

from gastown_mcp.errors import GastownError, InvalidInput, NotFound, RuntimeUnavailable
from gastown_mcp.runtime.docker_errors import translate_errors
from gastown_mcp.runtime.swarm_backend import SwarmRuntime

DEFAULT_VIA = "ssh {hostname} docker load"
CHECK_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 1800.0
DONE = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}


@dataclass(frozen=True)
class NodeLoad:
    hostname: str
    loaded: bool  # the load command succeeded
    present: bool  # the swarm started the image by ID on this node
    detail: str


def via_template(via: str) -> list[str]:
    """The load command as arguments, checked: it may name `{hostname}` and `{address}` and nothing else."""
    try:
        template = shlex.split(via)
        for part in template:
            part.format(hostname="h", address="a")
    except (ValueError, KeyError, IndexError) as exc:
        raise InvalidInput(
            f"--via {via!r} is not a command with only {{hostname}} and {{address}} in it ({exc}); "
            f"for example {DEFAULT_VIA!r}"
        ) from None
    if not template:
        raise InvalidInput(f"--via is empty: give the command that loads an image on a node, e.g. {DEFAULT_VIA!r}")
    return template


def load_image(
    runtime: SwarmRuntime,
    image: str,
    *,
    via: str = DEFAULT_VIA,
    nodes: Sequence[str] = (),
    progress: Callable[[str], None] = lambda _line: None,
) -> list[NodeLoad]:
    """Load `image` on every ready node but this engine's own (or on the hostnames in `nodes`), in parallel,
    then check each one through the swarm. One `NodeLoad` per node; nothing raised for a node that failed."""
    template = via_template(via)
    with translate_errors(f"reading image {image}"):
        try:
            image_id = str(runtime.client.images.get(image).id)
        except docker.errors.ImageNotFound:
            raise NotFound(f"image {image} is not on this engine: run `gastown image build` first") from None
        own = str((runtime.client.info().get("Swarm") or {}).get("NodeID") or "")
    ready = [n for n in runtime.nodes() if n["state"] == "ready" and n["availability"] == "active"]
    if nodes:
        unknown = sorted(set(nodes) - {n["hostname"] for n in ready})
        if unknown:
            raise NotFound(f"no ready swarm node is named {', '.join(unknown)}: `docker node ls` lists them")
        targets = [n for n in ready if n["hostname"] in nodes]
    else:
        targets = [n for n in ready if n["id"] != own]
    if not targets:
        raise NotFound("the swarm has no ready node besides this one: `docker swarm join` workers first")
    results: dict[str, NodeLoad] = {}

    def one(node: dict[str, str]) -> None:
        host = node["hostname"]
        command = [part.format(hostname=host, address=node["address"]) for part in template]
        progress(f"{host}: {' '.join(command)}")
        try:
            loaded, detail = _stream(runtime, image, command)
            present, why = check_image(runtime, host, image_id) if loaded else (False, "")
            results[host] = NodeLoad(host, loaded, present, why if loaded else detail)
        except GastownError as exc:
            results[host] = NodeLoad(host, False, False, str(exc))
        progress(f"{host}: {'ok' if results[host].present else 'FAILED'} {results[host].detail}")

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOAD_TIMEOUT_S + CHECK_TIMEOUT_S)
    late = f"no result within {LOAD_TIMEOUT_S + CHECK_TIMEOUT_S:.0f} s"
    return [results.get(n["hostname"]) or NodeLoad(n["hostname"], False, False, late) for n in targets]


def _chunks(runtime: SwarmRuntime, image: str) -> Iterator[bytes]:
    with translate_errors(f"saving image {image}"):
        yield from runtime.client.images.get(image).save(named=True)


def _stream(runtime: SwarmRuntime, image: str, command: list[str]) -> tuple[bool, str]:
    """`docker save image | command`: whether the command took it all and succeeded, and what it said."""
    with tempfile.TemporaryFile() as said:
        try:
            loader = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=said, stderr=subprocess.STDOUT)
        except OSError as exc:
            return False, f"cannot run {command[0]}: {exc}"
        assert loader.stdin is not None
        try:
            with loader.stdin:
                for chunk in _chunks(runtime, image):
                    loader.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the loader quit early: its exit status and output say why
        except RuntimeUnavailable as exc:
            loader.kill()
            loader.wait()
            return False, str(exc)
        try:
            loader.wait(timeout=LOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            loader.kill()
            loader.wait()
            return False, f"{command[0]} did not finish within {LOAD_TIMEOUT_S:.0f} s"
        said.seek(0)
        text = said.read().decode(errors="replace").strip()
    return loader.returncode == 0, text[-300:] or f"exit {loader.returncode}"


def check_image(
    runtime: SwarmRuntime, hostname: str, image_id: str, timeout_s: float = CHECK_TIMEOUT_S
) -> tuple[bool, str]:
    """Whether the swarm starts `image_id` on the node `hostname`: a one-shot service (`true`, no network,
    no restart) placed there. A node without the image rejects its task ("No such image")."""
    name = f"gastown-imagecheck-{image_id.removeprefix('sha256:')[:12]}-{hostname}"[:63]
    client = runtime.client
    with translate_errors(f"checking image on node {hostname}"):
        for old in client.services.list(filters={"name": name}):
            old.remove()
        service = client.api.create_service(
            docker.types.TaskTemplate(
                container_spec=docker.types.ContainerSpec(image=image_id, command=["true"], user="65534:65534"),
                restart_policy=docker.types.RestartPolicy(condition="none"),
                placement=docker.types.Placement(constraints=[f"node.hostname=={hostname}"]),
            ),
            name=name,
            labels={"gastown.imagecheck": "1"},
        )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with translate_errors(f"checking image on node {hostname}"):
                tasks = client.api.tasks(filters={"service": service["ID"]})
            for task in tasks:
                status = task.get("Status") or {}
                state, err = str(status.get("State")), str(status.get("Err") or "")
                exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
                if state == "complete" or (state in DONE and exit_code == 0):
                    return True, f"image {image_id[:19]} runs there"
                if state in DONE:
                    return False, err or f"the check's task ended {state}"
            time.sleep(0.5)
        return False, f"the check's task did not finish within {timeout_s:.0f} s"
    finally:
        with translate_errors(f"removing the image check on {hostname}"), contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(service["ID"])
