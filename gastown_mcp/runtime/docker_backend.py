"""The Docker backend of the `Runtime` protocol: one hardened container per agent.

The only module (with its siblings in runtime/) that imports docker; every docker or connection error is
translated here into a `gastown_mcp.errors` exception. The wall-clock limit is enforced twice: `timeout` in
the image's entrypoint, and `status()`/`wait()`/`reap_expired()` on the host once the deadline has passed.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import LogConfig, Ulimit
from docker.types import Mount as DockerMount

from gastown_mcp.errors import Conflict, NotFound, RuntimeUnavailable
from gastown_mcp.runtime import network
from gastown_mcp.runtime.docker_errors import START_HINT, connect, translate_errors
from gastown_mcp.runtime.protocol import (
    AGENT_HOME,
    LABEL_AGENT,
    LABEL_DEADLINE,
    LABEL_GENERATION,
    LABEL_ROLE,
    LABEL_TOWN,
    OOM_EXIT_CODE,
    WALLCLOCK_EXIT_CODE,
    ContainerStatus,
    ExitReason,
    LaunchSpec,
    NetworkPolicy,
    State,
    TownNetwork,
)

# The only DNS upstream an agent container gets: its own loopback, where nothing of the town's listens.
NO_RESOLVER = "127.0.0.1"

__all__ = ["START_HINT", "DockerRuntime", "connect", "exit_reason", "run_kwargs", "status_of", "translate_errors"]


def _parse_time(value: str | None) -> float | None:
    if not value or value.startswith("0001-01-01"):
        return None
    # Docker gives RFC 3339 with nanoseconds; Python parses at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    frac_digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    stamp = f"{head}.{frac_digits or '0'}+00:00"
    return datetime.fromisoformat(stamp).timestamp()


def exit_reason(exit_code: int, oom_killed: bool, finished_at: float | None, deadline: float | None) -> ExitReason:
    """Why a container ended: OOM beats everything, then success, then the wall clock, then a kill.

    OOM is Docker's flag or the entrypoint's own exit code: on cgroup v2, Docker misses some OOM kills.
    """
    if oom_killed or exit_code == OOM_EXIT_CODE:
        return "oom"
    if exit_code == 0:
        return "ok"
    past_deadline = deadline is not None and finished_at is not None and finished_at >= deadline
    if exit_code == WALLCLOCK_EXIT_CODE or past_deadline:
        return "wallclock"
    if exit_code in (137, 143):
        return "killed"
    return "failed"


def status_of(container: Container) -> ContainerStatus:
    """A `ContainerStatus` from a container's inspect data (no engine call)."""
    attrs: dict[str, Any] = container.attrs
    labels: dict[str, str] = attrs.get("Config", {}).get("Labels") or {}
    state_data: dict[str, Any] = attrs.get("State", {})
    raw = state_data.get("Status", "")
    deadline = float(labels[LABEL_DEADLINE]) if labels.get(LABEL_DEADLINE) else None
    started = _parse_time(state_data.get("StartedAt"))
    finished = _parse_time(state_data.get("FinishedAt"))
    networks: dict[str, Any] = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    addresses = [n.get("IPAddress") for n in networks.values() if n.get("IPAddress")]
    state: State
    exit_code: int | None = None
    reason: ExitReason | None = None
    if raw in ("running", "paused", "restarting"):
        state = "running"
    elif raw == "created":
        state = "created"
    else:
        state = "exited"
        exit_code = int(state_data.get("ExitCode", -1))
        reason = exit_reason(exit_code, bool(state_data.get("OOMKilled")), finished, deadline)
    return ContainerStatus(
        agent=labels.get(LABEL_AGENT, ""),
        town=labels.get(LABEL_TOWN, ""),
        role=labels.get(LABEL_ROLE, ""),
        container_id=container.id or "",
        state=state,
        exit_code=exit_code,
        reason=reason,
        started_at=started,
        finished_at=finished,
        deadline=deadline,
        address=addresses[0] if addresses else None,
        generation=int(labels.get(LABEL_GENERATION) or 0),
    )


def run_kwargs(spec: LaunchSpec, now: float) -> dict[str, Any]:
    """The docker `containers.create` arguments that make a container hardened and limited."""
    limits = spec.limits
    env = {
        **spec.env,
        "GASTOWN_TOWN": spec.town,
        "GASTOWN_AGENT": spec.agent,
        "GASTOWN_ROLE": spec.role,
        "GASTOWN_WALLCLOCK_SECONDS": str(limits.wallclock_s),
        "HOME": AGENT_HOME,
    }
    mounts = [
        DockerMount(target=m.target or str(m.source), source=str(m.source), type="bind", read_only=m.read_only)
        for m in spec.mounts
    ]
    # exec stays allowed on tmpfs: agents build and run code, and noexec would not stop a Python process anyway.
    tmpfs_opts = "rw,nosuid,nodev,exec"
    kwargs: dict[str, Any] = {
        "name": spec.container_name,
        "hostname": spec.agent[:63],
        "command": list(spec.command) or None,
        "environment": env,
        "labels": {
            LABEL_TOWN: spec.town,
            LABEL_AGENT: spec.agent,
            LABEL_ROLE: spec.role,
            LABEL_DEADLINE: f"{now + limits.wallclock_s:.3f}",
            LABEL_GENERATION: str(spec.generation),
        },
        "user": f"{spec.uid}:{spec.gid}",
        "working_dir": spec.workdir,
        "read_only": True,
        "tmpfs": {
            "/tmp": f"{tmpfs_opts},size={limits.tmp_mb}m",
            AGENT_HOME: f"{tmpfs_opts},size={limits.home_mb}m,uid={spec.uid},gid={spec.gid},mode=0700",
        },
        "mounts": mounts,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "ipc_mode": "private",
        "init": True,
        "mem_limit": f"{limits.memory_mb}m",
        "memswap_limit": f"{limits.memory_mb}m",
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
        "ulimits": [Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile)],
        "log_config": LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
    }
    if spec.network:
        kwargs["network"] = spec.network
        # Docker's embedded resolver (127.0.0.11) forwards names it does not know to the container's upstreams,
        # by default the host's resolvers (queried from the host's own namespace when they are on loopback):
        # a DNS tunnel out of an internal network. A user-set upstream is queried from the container's
        # namespace, and 127.0.0.1 there is the agent's own loopback, so an outside name resolves nowhere.
        kwargs["dns"] = [NO_RESOLVER]
        kwargs["dns_search"] = ["."]
        # Fail in 1 s instead of 10.
        kwargs["dns_opt"] = ["timeout:1", "attempts:1"]
    else:
        kwargs["network_mode"] = "none"
    return kwargs


def _check_image_user(spec: LaunchSpec, attrs: dict[str, Any]) -> None:
    """An image whose own user has other ids than the town runs agents as is refused (a home or a repository
    owned by someone else breaks the agent in odd ways): it was built for other `[runtime] agent_uid/gid`."""
    user = str((attrs.get("Config") or {}).get("User") or "")
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (int(uid), int(gid) if gid.isdigit() else spec.gid) != (spec.uid, spec.gid):
        raise Conflict(
            f"image {spec.image} runs as {user} but the town runs agents as {spec.uid}:{spec.gid} "
            "([runtime] agent_uid/agent_gid): run `gastown image build` to rebuild it with these ids"
        )


class DockerRuntime:
    """`Runtime` on the local Docker engine. Build with `DockerRuntime.connect()` or pass a client in."""

    def __init__(self, client: docker.DockerClient, grace_s: float = 15) -> None:
        self.client = client
        # Past its deadline plus this grace, the host stops a container whose own `timeout` did not.
        self.grace_s = grace_s
        # Time each container spent paused by this process (an emergency stop): its wall clock does not run then,
        # as the entrypoint's own timer leaves it out too. By container id: when each pause began, and the total.
        self._paused_at: dict[str, float] = {}
        self._paused_s: dict[str, float] = {}

    @classmethod
    def connect(cls, grace_s: float = 15) -> DockerRuntime:
        return cls(connect(), grace_s=grace_s)

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        with translate_errors("asking Docker for its version"):
            return f"docker {self.client.version().get('Version', '?')}"

    # -- the Runtime protocol -------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> ContainerStatus:
        with translate_errors(f"launching agent {spec.agent}"):
            try:
                existing = self.client.containers.get(spec.container_name)
            except docker.errors.NotFound:
                existing = None
            if existing is not None:
                raise Conflict(
                    f"agent {spec.agent} of town {spec.town} already has a container "
                    f"({status_of(existing).state}); stop and remove it first"
                )
            try:
                image = self.client.images.get(spec.image)
            except docker.errors.ImageNotFound:
                # Say how to build it; a registry pull would fail here anyway (no registry is reachable).
                raise NotFound(f"image {spec.image} is not built: run `gastown image build`") from None
            _check_image_user(spec, image.attrs)
            kwargs = run_kwargs(spec, time.time())
            container = self.client.containers.create(spec.image, **kwargs)
            try:
                container.start()
            except BaseException as exc:
                # A container that could not start (no AppArmor parser, a bad mount) must not stay behind in
                # "created": nothing would ever remove it, and every retry would add another.
                with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                    container.remove(force=True)
                if isinstance(exc, docker.errors.APIError):
                    raise RuntimeUnavailable(
                        f"launching agent {spec.agent}: its container could not start: {exc.explanation}. "
                        "`gastown doctor --sandbox` checks what this engine can run"
                    ) from exc
                raise
            container.reload()
            return status_of(container)

    def stop(self, town: str, agent: str, timeout_s: float = 10) -> ContainerStatus:
        container = self._get(town, agent)
        with translate_errors(f"stopping agent {agent}"):
            container.stop(timeout=int(timeout_s))
            container.reload()
        return status_of(container)

    def status(self, town: str, agent: str) -> ContainerStatus:
        container = self._get(town, agent)
        return self._enforce_deadline(container, time.time())

    def pause(self, town: str, agent: str) -> bool:
        container = self._get(town, agent)
        state = container.attrs.get("State", {})
        if state.get("Status") != "running":
            return False
        with translate_errors(f"pausing agent {agent}"), contextlib.suppress(docker.errors.APIError):
            container.pause()  # an APIError here: it stopped or was paused a moment ago
            self._paused_at[str(container.id)] = time.time()
            return True
        return False

    def unpause(self, town: str, agent: str) -> bool:
        container = self._get(town, agent)
        if not container.attrs.get("State", {}).get("Paused"):
            return False
        with translate_errors(f"resuming agent {agent}"), contextlib.suppress(docker.errors.APIError):
            container.unpause()
            began = self._paused_at.pop(str(container.id), None)
            if began is not None:
                key = str(container.id)
                self._paused_s[key] = self._paused_s.get(key, 0.0) + time.time() - began
            return True
        return False

    def paused(self, town: str) -> builtins.list[str]:
        return [status_of(c).agent for c in self._containers(town) if c.attrs.get("State", {}).get("Paused")]

    def resolver(self, town: str, agent: str) -> tuple[list[str], list[str]]:
        """The DNS servers and search domains the engine gives the agent's container (its embedded resolver
        forwards to these), read from the container's configuration: nothing is queried."""
        host_config = self._get(town, agent).attrs.get("HostConfig", {})
        return list(host_config.get("Dns") or []), list(host_config.get("DnsSearch") or [])

    def logs(self, town: str, agent: str, tail: int = 200) -> str:
        container = self._get(town, agent)
        with translate_errors(f"reading logs of agent {agent}"):
            raw: bytes = container.logs(tail=tail)
        return raw.decode("utf-8", errors="replace")

    def wait(self, town: str, agent: str, timeout_s: float) -> ContainerStatus:
        """Wait until the container exits or `timeout_s` passes; either way return its status."""
        container = self._get(town, agent)
        current = status_of(container)
        budget = timeout_s
        if current.deadline is not None:
            frozen = self._paused_s.get(str(container.id), 0.0)
            budget = min(timeout_s, max(0.0, current.deadline + frozen + self.grace_s - time.time()))
        with translate_errors(f"waiting for agent {agent}"):
            with contextlib.suppress(requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                container.wait(timeout=max(1, int(budget + 0.999)))
            container.reload()
        return self._enforce_deadline(container, time.time())

    def list(self, town: str) -> builtins.list[ContainerStatus]:
        return [status_of(c) for c in self._containers(town)]

    def remove(self, town: str, agent: str) -> None:
        """Remove the agent's container, running or not. Removing a missing one is not an error."""
        try:
            container = self._get(town, agent)
        except NotFound:
            return
        with translate_errors(f"removing agent {agent}"), contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    def ensure_network(self, town: str, policy: NetworkPolicy) -> TownNetwork:
        """The town's internal network with its host firewall (idempotent; see `network.py`)."""
        return network.ensure_town_network(self.client, town, policy)

    def remove_network(self, town: str) -> None:
        network.remove_town_network(self.client, town)

    # -- beyond the protocol: housekeeping ------------------------------------------------------------

    def reap_expired(self, town: str | None = None, now: float | None = None) -> builtins.list[ContainerStatus]:
        """Stop every running container past its deadline plus grace; return the ones stopped."""
        moment = time.time() if now is None else now
        reaped = []
        for container in self._containers(town, running_only=True):
            before = status_of(container)
            after = self._enforce_deadline(container, moment)
            if before.state == "running" and after.state == "exited":
                reaped.append(after)
        return reaped

    def stale_firewalls(self) -> builtins.list[str]:
        """Bridges of dead towns whose host firewall chains were left behind."""
        return network.stale_firewall_bridges()

    def remove_firewalls(self, bridges: Iterable[str]) -> builtins.list[str]:
        """Remove those chains (and their jumps) for bridges that are still gone; returns the bridges cleaned."""
        stale = set(network.stale_firewall_bridges())
        done = [b for b in bridges if b in stale]
        for bridge in done:
            network.remove_host_firewall(bridge)
        return done

    def find_orphans(self, town: str, known_agents: Iterable[str]) -> builtins.list[ContainerStatus]:
        """Containers labelled for `town` whose agent the town no longer knows (e.g. after a crash)."""
        known = set(known_agents)
        return [s for s in self.list(town) if s.agent not in known]

    def cleanup(self, town: str, agents: Iterable[str] | None = None) -> builtins.list[str]:
        """Remove the town's containers (only `agents` when given); return the agent names removed."""
        wanted = None if agents is None else set(agents)
        removed = []
        for container in self._containers(town):
            agent = status_of(container).agent
            if wanted is None or agent in wanted:
                with translate_errors(f"removing agent {agent}"), contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                removed.append(agent)
        return removed

    # -- internals ------------------------------------------------------------------------------------

    def _get(self, town: str, agent: str) -> Container:
        with translate_errors(f"looking up agent {agent}"):
            found = self.client.containers.list(
                all=True, filters={"label": [f"{LABEL_TOWN}={town}", f"{LABEL_AGENT}={agent}"]}
            )
        if not found:
            raise NotFound(f"agent {agent} of town {town} has no container; spawn it first")
        return found[0]

    def _containers(self, town: str | None, running_only: bool = False) -> builtins.list[Container]:
        label = f"{LABEL_TOWN}={town}" if town else LABEL_TOWN
        with translate_errors("listing containers"):
            return builtins.list(self.client.containers.list(all=not running_only, filters={"label": label}))

    def _enforce_deadline(self, container: Container, now: float) -> ContainerStatus:
        current = status_of(container)
        if current.state != "running" or current.deadline is None or container.attrs.get("State", {}).get("Paused"):
            return current  # a paused container's clock does not run
        frozen = self._paused_s.get(str(container.id), 0.0)
        if now <= current.deadline + frozen + self.grace_s:
            return current
        with translate_errors(f"stopping agent {current.agent} at its wall-clock limit"):
            # SIGALRM makes the entrypoint end the command as if its own deadline came (exit 124),
            # so the exit reason reads "wallclock" for good; a plain stop follows if that is not enough.
            with contextlib.suppress(docker.errors.APIError):
                container.kill(signal="SIGALRM")
            with contextlib.suppress(requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                container.wait(timeout=10)
            container.reload()
            if status_of(container).state == "running":
                container.stop(timeout=5)
                container.reload()
        return status_of(container)
