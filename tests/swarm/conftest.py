"""The session's real multi-node Docker Swarm (see nodes.py), or a skip (a failure with CI set) saying why not."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gastown_mcp.runtime.docker_backend import DockerRuntime

from .nodes import Swarm, SwarmUnavailable, local_swarm


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the swarm tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def swarm(docker_runtime: DockerRuntime, agent_image: str, root: None) -> Iterator[Swarm]:
    try:
        with local_swarm(docker_runtime.client, agent_image) as swarm:
            yield swarm
    except SwarmUnavailable as exc:
        unavailable(str(exc))
