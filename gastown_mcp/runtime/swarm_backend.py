"""The Docker Swarm backend of the `Runtime` protocol: agents as one-task services on other machines.

The town runs beside a swarm manager's engine (this one). Each agent is a service with one replica and no
restart, on worker nodes (`[runtime] swarm_placement`), on an internal overlay network of its own where the
only peer is the town's relay (`swarm_network.py`), and gets its repository over the town's git endpoint
instead of a bind mount. Gates (which mount the candidate tree and need no network) stay on the manager's
engine through the local backend. A node that stops answering takes its agents with it: their status reads
exited (killed), so the witness requeues their beads and the scheduler places them on the nodes left.
Images reach nodes by `docker save | docker load` (no registry); services name the image by its ID, so a
node never tries to pull.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import docker
import docker.errors

from gastown_mcp.errors import Conflict, NotFound, RuntimeUnavailable
from gastown_mcp.runtime import swarm_freeze, swarm_network
from gastown_mcp.runtime.docker_backend import DockerRuntime, _check_image_user, exit_reason
from gastown_mcp.runtime.docker_errors import connect, translate_errors
from gastown_mcp.runtime.protocol import (
    LABEL_AGENT,
    LABEL_TOWN,
    ContainerStatus,
    LaunchSpec,
    NetworkPolicy,
    TownNetwork,
)
from gastown_mcp.runtime.swarm_spec import PENDING, PUSH_HOOK, WORK_MB, service_name, service_spec, task_status

DEFAULT_PLACEMENT = ("node.role==worker",)
START_TIMEOUT_S = 90.0
POLL_S = 0.25

__all__ = ["DEFAULT_PLACEMENT", "SwarmRuntime"]


class SwarmRuntime:
    """`Runtime` on a Docker Swarm whose manager is the engine `client` talks to."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        placement: Sequence[str] = DEFAULT_PLACEMENT,
        grace_s: float = 15,
        work_mb: int = WORK_MB,
        start_timeout_s: float = START_TIMEOUT_S,
        relay_image: str = "gastown-agent:latest",
        node_docker: str = "",
    ) -> None:
        self.client = client
        self.local = DockerRuntime(client, grace_s=grace_s)  # gates: on the manager, next to the rig
        self.placement = tuple(placement)
        self.grace_s = grace_s
        self.work_mb = work_mb
        self.start_timeout_s = start_timeout_s
        self.relay_image = relay_image
        self.node_docker = node_docker  # `[runtime] swarm_node_docker`: docker on one node (swarm_freeze.py)
        if node_docker:
            swarm_freeze.node_command(node_docker, "h", "a")  # a bad template fails now, not at an emergency stop

    @classmethod
    def connect(cls, **kwargs: Any) -> SwarmRuntime:
        runtime = cls(connect(), **kwargs)
        runtime.check_manager()
        return runtime

    def check_manager(self) -> None:
        """The engine must be a swarm manager, or nothing can be placed on other machines."""
        with translate_errors("asking Docker about its swarm"):
            info = self.client.info().get("Swarm") or {}
        if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
            raise RuntimeUnavailable(
                '[runtime] backend = "swarm" needs this engine to be a swarm manager: run '
                "`docker swarm init --advertise-addr ADDRESS` here and `docker swarm join` on each worker, "
                "then load the agent image on every node (`gastown swarm load-image`)"
            )

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        with translate_errors("asking Docker about its swarm"):
            version = self.client.version().get("Version", "?")
            nodes = self.client.nodes.list()
        ready = [n for n in nodes if (n.attrs.get("Status") or {}).get("State") == "ready"]
        return f"docker swarm {version}: {len(ready)} of {len(nodes)} nodes ready"

    # -- the Runtime protocol -------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> ContainerStatus:
        return self.launch_on(spec, self.placement)

    def launch_on(self, spec: LaunchSpec, placement: Sequence[str]) -> ContainerStatus:
        """Start the agent as a service placed by `placement` (swarm constraints); waits until its task runs.

        A task the swarm rejects, or cannot place within the start timeout, is removed and reported."""
        if spec.network is None:
            return self.local.launch(spec)  # no network at all (gates): nothing to gain from another machine
        name = service_name(spec.town, spec.agent)
        with translate_errors(f"launching agent {spec.agent}"):
            if self._find(spec.town, spec.agent) is not None:
                raise Conflict(f"agent {spec.agent} of town {spec.town} already has a service; stop and remove it")
            try:
                image = self.client.images.get(spec.image)
            except docker.errors.ImageNotFound:
                raise NotFound(f"image {spec.image} is not built: run `gastown image build`") from None
            _check_image_user(spec, image.attrs)
            network = swarm_network.ensure_agent_network(self.client, spec.town, spec.agent)
            hooks = self._hook_config() if spec.env.get("GASTOWN_GIT_URL") else None
            kwargs = service_spec(spec, str(image.id), network, time.time(), placement, self.work_mb, hooks)
            self.client.api.create_service(**kwargs)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            status, error = self._status_and_error(spec.town, spec.agent)
            if status.state == "running" or (status.state == "exited" and self._ran(spec.town, spec.agent)):
                return status  # started (a task may run and end between two looks: a memory hog, a quick job)
            if status.state == "exited" or time.monotonic() > deadline:
                why = error or f"its task is still {status.state} after {self.start_timeout_s:.0f} s"
                self.remove(spec.town, spec.agent)
                raise RuntimeUnavailable(
                    f"launching agent {spec.agent} on the swarm ({name}): {why}. Check `docker node ls`, the "
                    "placement constraints ([runtime] swarm_placement) and that every node has the image "
                    f"{spec.image} as built now (`gastown swarm load-image`, again after every image build)"
                )
            time.sleep(POLL_S)

    def stop(self, town: str, agent: str, timeout_s: float = 10) -> ContainerStatus:
        service = self._find(town, agent)
        if service is None:
            return self.local.stop(town, agent, timeout_s)
        with translate_errors(f"stopping agent {agent}"):
            service.scale(0)  # its task gets SIGTERM, then SIGKILL after the grace period; the service stays
        end = time.monotonic() + timeout_s + 12
        status = self.status(town, agent)
        while status.state != "exited" and time.monotonic() < end:
            time.sleep(POLL_S)
            status = self.status(town, agent)
        return status

    def status(self, town: str, agent: str) -> ContainerStatus:
        if self._find(town, agent) is None:
            return self.local.status(town, agent)
        status = self._status_and_error(town, agent)[0]
        late = status.deadline is not None and time.time() > status.deadline + self.grace_s
        if status.state == "running" and late:  # the host-side wall-clock backstop
            return self._expire(town, agent)
        return status

    def logs(self, town: str, agent: str, tail: int = 200) -> str:
        service = self._find(town, agent)
        if service is None:
            return self.local.logs(town, agent, tail)
        with translate_errors(f"reading logs of agent {agent}"):
            try:
                chunks = service.logs(stdout=True, stderr=True, tail=tail)
                text = b"".join(chunks).decode("utf-8", errors="replace")
            except docker.errors.APIError as exc:  # its node is gone
                text = f"(logs unavailable: {exc.explanation})\n"
        error = self._status_and_error(town, agent)[1]
        return text + (f"[swarm] {error}\n" if error else "")

    def wait(self, town: str, agent: str, timeout_s: float) -> ContainerStatus:
        if self._find(town, agent) is None:
            return self.local.wait(town, agent, timeout_s)
        end = time.monotonic() + timeout_s
        status = self.status(town, agent)
        while status.state != "exited" and time.monotonic() < end:
            time.sleep(POLL_S)
            status = self.status(town, agent)
        return status

    def list(self, town: str) -> builtins.list[ContainerStatus]:
        services = self._services(town)
        tasks = self._newest_tasks([s.id for s in services])
        up = self._nodes_up()
        found = [
            task_status(s.attrs["Spec"].get("Labels") or {}, s.id, tasks.get(s.id), up, exit_reason) for s in services
        ]
        return found + self.local.list(town)

    def remove(self, town: str, agent: str) -> None:
        service = self._find(town, agent)
        if service is None:
            self.local.remove(town, agent)
            return
        with translate_errors(f"removing agent {agent}"), contextlib.suppress(docker.errors.NotFound):
            service.remove()
        swarm_network.remove_agent_network(self.client, town, agent)

    def ensure_network(self, town: str, policy: NetworkPolicy) -> TownNetwork:
        return swarm_network.ensure(self.client, town, policy, self.relay_image)

    def remove_network(self, town: str) -> None:
        swarm_network.remove(self.client, town)

    def cleanup(self, town: str, agents: Iterable[str] | None = None) -> builtins.list[str]:
        wanted = None if agents is None else set(agents)
        removed = []
        for service in self._services(town):
            agent = (service.attrs["Spec"].get("Labels") or {}).get(LABEL_AGENT, "")
            if wanted is None or agent in wanted:
                self.remove(town, agent)
                removed.append(agent)
        return removed + self.local.cleanup(town, wanted)

    def reap_expired(self, town: str | None = None, now: float | None = None) -> builtins.list[ContainerStatus]:
        moment = time.time() if now is None else now
        reaped = []
        for status in self.list(town) if town else []:
            if status.state == "running" and status.deadline is not None and moment > status.deadline + self.grace_s:
                reaped.append(self._expire(status.town, status.agent))
        return reaped + self.local.reap_expired(town, now)

    # A service cannot be frozen through the manager: with `node_docker` (a way to each node's own engine) the
    # task's container is paused on its node; without it an emergency stop holds the gateway and dispatch only.
    def pause(self, town: str, agent: str) -> bool:
        if self._find(town, agent) is None:
            return self.local.pause(town, agent)
        return self._on_node(town, agent, "pause")

    def unpause(self, town: str, agent: str) -> bool:
        if self._find(town, agent) is None:
            return self.local.unpause(town, agent)
        return self._on_node(town, agent, "unpause")

    def paused(self, town: str) -> builtins.list[str]:
        found = self.local.paused(town)
        if not self.node_docker:
            return found
        by_node: dict[str, dict[str, str]] = {}  # node id -> container id -> agent
        services = self._services(town)
        tasks = self._newest_tasks([s.id for s in services])
        for service in services:
            task = tasks.get(service.id) or {}
            cid = str(((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID") or "")
            if cid and (task.get("Status") or {}).get("State") == "running":
                agent = str((service.attrs["Spec"].get("Labels") or {}).get(LABEL_AGENT, ""))
                by_node.setdefault(str(task.get("NodeID")), {})[cid] = agent
        nodes = {n["id"]: n for n in self.nodes() if n["state"] == "ready"}
        for node_id, containers in by_node.items():
            node = nodes.get(node_id)
            if node is None:
                continue  # a node that is down: its agents read killed, not paused
            ps = ("ps", "-q", "--no-trunc", "--filter", "status=paused")
            ok, out = swarm_freeze.node_docker(self.node_docker, node["hostname"], node["address"], *ps)
            if ok:
                found += [containers[c] for c in out.split() if c in containers]
        return sorted(found)

    def _on_node(self, town: str, agent: str, verb: str) -> bool:
        """`docker pause|unpause` of the agent's running task container, on its node."""
        if not self.node_docker:
            return False
        service = self._find(town, agent)
        task = self._newest_tasks([service.id]).get(service.id) if service is not None else None
        status = (task or {}).get("Status") or {}
        cid = str((status.get("ContainerStatus") or {}).get("ContainerID") or "")
        node = next((n for n in self.nodes() if task and n["id"] == task.get("NodeID")), None)
        if not cid or status.get("State") != "running" or node is None or node["state"] != "ready":
            return False
        return swarm_freeze.node_docker(self.node_docker, node["hostname"], node["address"], verb, cid)[0]

    # -- beyond the protocol --------------------------------------------------------------------------

    def node_of(self, town: str, agent: str) -> str | None:
        """The hostname of the node the agent's newest task was placed on (None before placement)."""
        service = self._find(town, agent)
        task = self._newest_tasks([service.id]).get(service.id) if service is not None else None
        if not task or not task.get("NodeID"):
            return None
        with translate_errors("reading the swarm's nodes"):
            node = self.client.nodes.get(task["NodeID"])
        return str((node.attrs.get("Description") or {}).get("Hostname") or node.id)

    def nodes(self) -> builtins.list[dict[str, str]]:
        """Every node: id, hostname, role, state (ready, down, ...), availability and address."""
        with translate_errors("reading the swarm's nodes"):
            listed = self.client.nodes.list()
        return [
            {
                "id": n.id or "",
                "hostname": str((n.attrs.get("Description") or {}).get("Hostname") or ""),
                "role": str((n.attrs.get("Spec") or {}).get("Role") or ""),
                "availability": str((n.attrs.get("Spec") or {}).get("Availability") or ""),
                "state": str((n.attrs.get("Status") or {}).get("State") or ""),
                "address": str((n.attrs.get("Status") or {}).get("Addr") or ""),
            }
            for n in listed
        ]

    def stale_firewalls(self) -> builtins.list[str]:
        return self.local.stale_firewalls()

    def remove_firewalls(self, bridges: Iterable[str]) -> builtins.list[str]:
        return self.local.remove_firewalls(bridges)

    # -- internals ------------------------------------------------------------------------------------

    def _find(self, town: str, agent: str) -> Any:
        with translate_errors(f"looking up agent {agent}"):
            found = self.client.services.list(filters={"label": [f"{LABEL_TOWN}={town}", f"{LABEL_AGENT}={agent}"]})
        return found[0] if found else None

    def _services(self, town: str) -> builtins.list[Any]:
        with translate_errors("listing services"):
            return builtins.list(self.client.services.list(filters={"label": f"{LABEL_TOWN}={town}"}))

    def _newest_tasks(self, service_ids: builtins.list[str]) -> dict[str, dict[str, Any]]:
        if not service_ids:
            return {}
        with translate_errors("listing tasks"):
            tasks: builtins.list[dict[str, Any]] = self.client.api.tasks(filters={"service": service_ids})
        newest: dict[str, dict[str, Any]] = {}
        for task in tasks:
            sid = str(task.get("ServiceID"))
            if sid not in newest or task.get("CreatedAt", "") > newest[sid].get("CreatedAt", ""):
                newest[sid] = task
        return newest

    def _nodes_up(self) -> dict[str, bool]:
        with translate_errors("reading the swarm's nodes"):
            return {str(n.id): (n.attrs.get("Status") or {}).get("State") == "ready" for n in self.client.nodes.list()}

    def _status_and_error(self, town: str, agent: str) -> tuple[ContainerStatus, str]:
        service = self._find(town, agent)
        if service is None:
            raise NotFound(f"agent {agent} of town {town} has no service; spawn it first")
        task = self._newest_tasks([service.id]).get(service.id)
        labels = service.attrs["Spec"].get("Labels") or {}
        status = task_status(labels, service.id, task, self._nodes_up(), exit_reason)
        error = str(((task or {}).get("Status") or {}).get("Err") or "")
        if status.state == "exited" and status.reason == "killed" and not error and task is not None:
            raw = str((task.get("Status") or {}).get("State"))
            if raw in PENDING or raw == "running":
                error = f"node {task.get('NodeID')} stopped answering"
        return status, error

    def _ran(self, town: str, agent: str) -> bool:
        """Whether the agent's newest task had a container that ran and ended (complete, or failed with an exit
        code), as opposed to a task the node rejected or never started (no image, no room)."""
        service = self._find(town, agent)
        task = self._newest_tasks([service.id]).get(service.id) if service is not None else None
        status = (task or {}).get("Status") or {}
        container = status.get("ContainerStatus") or {}
        return status.get("State") in ("complete", "failed") and bool(container.get("ContainerID"))

    def _hook_config(self) -> tuple[str, str]:
        """The swarm config holding the push hook, named by its content (made once, shared by every agent)."""
        name = f"gastown-git-hook-{hashlib.sha256(PUSH_HOOK.encode()).hexdigest()[:12]}"
        found = self.client.configs.list(filters={"name": name})
        exact = [c for c in found if (c.attrs.get("Spec") or {}).get("Name") == name]
        if exact:
            return str(exact[0].id), name
        with contextlib.suppress(docker.errors.APIError):  # made by a concurrent launch: read it below
            self.client.configs.create(name=name, data=PUSH_HOOK.encode(), labels={"gastown.hook": "push"})
        made = [c for c in self.client.configs.list(filters={"name": name}) if c.name == name]
        return str(made[0].id), name

    def _expire(self, town: str, agent: str) -> ContainerStatus:
        """Stop a service past its deadline; a task that ends after the deadline reads as `wallclock`."""
        service = self._find(town, agent)
        if service is not None:
            with translate_errors(f"stopping agent {agent} at its wall-clock limit"):
                service.scale(0)
        end = time.monotonic() + 15
        status = self._status_and_error(town, agent)[0]
        while status.state != "exited" and time.monotonic() < end:
            time.sleep(POLL_S)
            status = self._status_and_error(town, agent)[0]
        return status
