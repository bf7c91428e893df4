"""What the town asks of a container runtime: the `Runtime` protocol and the data it speaks.

`LaunchSpec` says what to run for which agent, `Limits` how much it may use, `ContainerStatus` what became
of it. The Docker backend lives in `docker_backend.py`, the Swarm one (agents on other machines) in
`swarm_backend.py`; docs/scale.md maps the protocol onto Kubernetes.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from gastown_mcp.errors import Forbidden, InvalidInput

# Agents run as a dedicated id far above the ranges distributions hand to people (1000+) and system accounts,
# so a file an agent leaves on the host belongs to no host account. `[runtime] agent_uid`/`agent_gid` change
# it (the image is built with the same ids: `gastown image build`).
AGENT_UID = 61000
AGENT_GID = 61000
MIN_AGENT_ID = 1000
AGENT_HOME = "/home/agent"
WORK_DIR = "/work"
DEFAULT_IMAGE = "gastown-agent:latest"

LABEL_TOWN = "gastown.town"
LABEL_AGENT = "gastown.agent"
LABEL_ROLE = "gastown.role"
LABEL_DEADLINE = "gastown.deadline"
LABEL_GENERATION = "gastown.generation"

# Exit code of coreutils `timeout` when the wall-clock limit fires inside the container.
WALLCLOCK_EXIT_CODE = 124
# Exit code of the agent entrypoint when its memory cgroup counted an OOM kill (sandbox/entrypoint.sh).
OOM_EXIT_CODE = 251

State = Literal["created", "running", "exited", "missing"]
ExitReason = Literal["ok", "failed", "oom", "wallclock", "killed"]

# Provider credentials never enter a container: the gateway holds them. Agents get a virtual key through
# ANTHROPIC_AUTH_TOKEN (sent as a bearer token to the gateway), which is why that name is not listed.
FORBIDDEN_ENV_NAMES: frozenset[str] = frozenset(
    {
        "ANTHROPIC_API_KEY",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "DOCKER_HOST",
        "GH_TOKEN",
        "GITHUB_TOKEN",
    }
)
FORBIDDEN_VALUE_PREFIXES: tuple[str, ...] = ("sk-ant-", "sk-proj-")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Limits:
    """Resource ceilings of one container. Defaults suit a Claude Code polecat (plan >= 1 GiB for real work)."""

    memory_mb: int = 2048
    cpus: float = 1.0
    pids: int = 512
    nofile: int = 4096
    tmp_mb: int = 256
    home_mb: int = 512
    wallclock_s: int = 4 * 3600
    disk_mb: int = 4096  # what the agent may write to its host directories (repository, ~/.claude): see disks.py

    def __post_init__(self) -> None:
        for name in ("memory_mb", "pids", "nofile", "tmp_mb", "home_mb", "wallclock_s", "disk_mb"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"limit {name} must be positive, got {getattr(self, name)}")
        if self.cpus <= 0:
            raise InvalidInput(f"limit cpus must be positive, got {self.cpus}")


@dataclass(frozen=True)
class Mount:
    """A host path bound into the container at `target` (the same path when target is None)."""

    source: Path
    target: str | None = None
    read_only: bool = True


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one agent's container.

    `command` empty means the image default (Claude Code headless). `mounts` usually come from
    `rigs.AgentRepo.mounts()`. `network` is the town network's name from `network.TownNetwork`.
    """

    town: str
    agent: str
    role: str
    image: str = DEFAULT_IMAGE
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    network: str | None = None
    limits: Limits = field(default_factory=Limits)
    workdir: str = WORK_DIR
    generation: int = 0  # which run of this agent: a late event from an older container is told apart
    uid: int = AGENT_UID  # the image's agent user must have these ids (`[runtime] agent_uid`/`agent_gid`)
    gid: int = AGENT_GID

    def __post_init__(self) -> None:
        for label, value in (("town", self.town), ("agent", self.agent), ("role", self.role)):
            if not _NAME_RE.match(value):
                raise InvalidInput(f"{label} name {value!r} must be lowercase letters, digits, '-', '_' or '.'")
        check_agent_ids(self.uid, self.gid)
        check_env(self.env)
        for mount in self.mounts:
            if str(mount.source).rstrip("/") in {"/var/run/docker.sock", "/run/docker.sock"}:
                raise Forbidden("the Docker socket is never mounted into an agent container")

    @property
    def container_name(self) -> str:
        return f"gastown-{self.town}-{self.agent}"


def check_agent_ids(uid: int, gid: int) -> None:
    """Refuse root and low (system) ids for the agent user."""
    for name, value in (("agent_uid", uid), ("agent_gid", gid)):
        if not MIN_AGENT_ID <= value < 2**31 - 1:
            raise InvalidInput(
                f"[runtime] {name} must be between {MIN_AGENT_ID} and {2**31 - 2} (default {AGENT_UID}), got {value}"
            )


def check_env(env: Mapping[str, str]) -> None:
    """Refuse provider credentials in a container's environment (they belong to the gateway only)."""
    for name, value in env.items():
        if name.upper() in FORBIDDEN_ENV_NAMES:
            raise Forbidden(
                f"environment variable {name} would put a provider credential in an agent container; "
                "agents reach models through the gateway with a virtual key (ANTHROPIC_AUTH_TOKEN)"
            )
        if value.startswith(FORBIDDEN_VALUE_PREFIXES):
            raise Forbidden(f"environment variable {name} looks like a provider API key; use the gateway")


@dataclass(frozen=True)
class ContainerStatus:
    """What a runtime knows about one agent's container. `reason` is set once it has exited."""

    agent: str
    town: str
    role: str
    container_id: str
    state: State
    exit_code: int | None = None
    reason: ExitReason | None = None
    started_at: float | None = None
    finished_at: float | None = None
    deadline: float | None = None
    address: str | None = None
    generation: int = 0


@dataclass(frozen=True)
class NetworkPolicy:
    """Which host ports a town's containers may reach (on the bridge gateway IP); `subnet` None lets Docker pick."""

    allowed_host_ports: tuple[int, ...] = ()
    subnet: str | None = None

    def __post_init__(self) -> None:
        for port in self.allowed_host_ports:
            if not 0 < port < 65536:
                raise InvalidInput(f"host port {port} is out of range")


@dataclass(frozen=True)
class TownNetwork:
    """A town's network as created. Serve the MCP endpoint on `gateway` so containers can reach it (or on
    `host_address` when set: agents then reach the town as `gateway` through a relay, as on a swarm)."""

    town: str
    name: str
    bridge: str
    subnet: str
    gateway: str
    allowed_host_ports: tuple[int, ...]
    host_address: str | None = None

    @property
    def listen_address(self) -> str:
        """The host address the town's MCP and gateway ports must be bound to for agents to reach them."""
        return self.host_address or self.gateway

    def url(self, port: int, path: str = "") -> str:
        return f"http://{self.gateway}:{port}{path}"


@runtime_checkable
class Runtime(Protocol):
    """A place to run agent containers. Every method raises `RuntimeUnavailable` when the engine is down."""

    def launch(self, spec: LaunchSpec) -> ContainerStatus: ...

    def stop(self, town: str, agent: str, timeout_s: float = 10) -> ContainerStatus: ...

    def status(self, town: str, agent: str) -> ContainerStatus: ...

    def logs(self, town: str, agent: str, tail: int = 200) -> str: ...

    def wait(self, town: str, agent: str, timeout_s: float) -> ContainerStatus: ...

    def list(self, town: str) -> builtins.list[ContainerStatus]: ...

    def remove(self, town: str, agent: str) -> None: ...

    def ensure_network(self, town: str, policy: NetworkPolicy) -> TownNetwork: ...

    def remove_network(self, town: str) -> None: ...

    def cleanup(self, town: str, agents: Iterable[str] | None = None) -> builtins.list[str]:
        """Remove the town's containers (all, or those of `agents`); returns the agents removed."""
        ...

    def reap_expired(self, town: str | None = None, now: float | None = None) -> builtins.list[ContainerStatus]:
        """Stop containers past their wall-clock deadline (the host-side backstop); returns what it stopped."""
        ...

    def describe(self) -> str:
        """One line naming the engine and its version, for `gastown doctor`."""
        ...

    def pause(self, town: str, agent: str) -> bool:
        """Freeze the agent's container in place (emergency stop); False when it is not running."""
        ...

    def unpause(self, town: str, agent: str) -> bool:
        """Resume a frozen container; False when it was not paused."""
        ...

    def paused(self, town: str) -> builtins.list[str]:
        """The agents whose containers are frozen now."""
        ...
