"""Agent containers: the `Runtime` protocol and its backends, the agent image, town networks, the self-test.

Only this package imports docker. `connect_runtime(backend)` picks the backend `[runtime] backend` names; the
town's composition root calls it and hands the result to `Town`, and nothing else holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gastown_mcp.errors import InvalidInput
from gastown_mcp.runtime.protocol import (
    AGENT_GID,
    AGENT_UID,
    ContainerStatus,
    LaunchSpec,
    Limits,
    Mount,
    NetworkPolicy,
    Runtime,
    TownNetwork,
    check_agent_ids,
)

if TYPE_CHECKING:
    from gastown_mcp.config import RuntimeSection
    from gastown_mcp.runtime.image import BuildResult

BACKENDS = ("docker", "swarm")

__all__ = [
    "BACKENDS",
    "ContainerStatus",
    "LaunchSpec",
    "Limits",
    "Mount",
    "NetworkPolicy",
    "Runtime",
    "TownNetwork",
    "build_images",
    "connect_runtime",
]


def build_images(
    *,
    rebuild: bool = False,
    progress: Callable[[str], None] = print,
    town: bool = False,
    agent_ids: tuple[int, int] | None = None,
) -> BuildResult:
    """Build the agent image (and the town image with `town`) on the local engine; skips what is up to date.
    `agent_ids` are the uid and gid of the image's agent user (`[runtime] agent_uid`/`agent_gid`)."""
    from gastown_mcp.runtime.docker_errors import connect
    from gastown_mcp.runtime.image import ImageConfig
    from gastown_mcp.runtime.image import build_images as build

    # The Dockerfile's defaults are the protocol's: pass ids only when they differ, so both spellings of the
    # default build the same image.
    args: dict[str, str] = {}
    if agent_ids is not None and agent_ids != (AGENT_UID, AGENT_GID):
        check_agent_ids(*agent_ids)
        args = {"AGENT_UID": str(agent_ids[0]), "AGENT_GID": str(agent_ids[1])}
    return build(connect(), ImageConfig(build_args=args), rebuild=rebuild, progress=progress, town=town)


def connect_runtime(backend: str | RuntimeSection = "docker") -> Runtime:
    """Connect to the container engine `[runtime]` names (`RuntimeUnavailable` says how to start it)."""
    section = None if isinstance(backend, str) else backend
    name = backend if isinstance(backend, str) else backend.backend
    if name == "docker":
        from gastown_mcp.runtime.docker_backend import DockerRuntime

        return DockerRuntime.connect()
    if name == "swarm":
        from gastown_mcp.runtime.swarm_backend import DEFAULT_PLACEMENT, SwarmRuntime

        if section is None:
            return SwarmRuntime.connect(placement=DEFAULT_PLACEMENT)
        return SwarmRuntime.connect(
            placement=section.swarm_placement,
            work_mb=section.swarm_work_mb,
            relay_image=section.image,
            node_docker=section.swarm_node_docker,
        )
    raise InvalidInput(f"[runtime] backend = {name!r} is not one of: {', '.join(BACKENDS)}")
