"""Fixtures for the end-to-end tests: the Docker engine, the agent image, root for the town's firewall.

Without them the tests skip with the reason, except when CI is set: there they fail, because CI must prove
the factory runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from gastown_mcp.errors import GastownError
from gastown_mcp.runtime.docker_backend import DockerRuntime, connect
from gastown_mcp.runtime.image import TOWN_IMAGE, ImageConfig, build_images
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the end-to-end tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_runtime() -> Iterator[DockerRuntime]:
    try:
        client = connect(timeout_s=600)
    except GastownError as exc:
        unavailable(f"no Docker engine reachable: {exc}")
    if os.geteuid() != 0:
        unavailable("the town network's host firewall needs root (iptables)")
    rt = DockerRuntime(client, grace_s=2)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def agent_image(docker_runtime: DockerRuntime) -> str:
    """The agent image with Claude Code, built (or found up to date) once per session."""
    try:
        build_images(docker_runtime.client, ImageConfig(), progress=lambda _line: None)
    except GastownError as exc:
        unavailable(f"the agent image cannot be built: {exc}")
    return DEFAULT_IMAGE


@pytest.fixture(scope="session")
def town_image(docker_runtime: DockerRuntime, agent_image: str) -> str:
    """The town server image for compose.yaml (the agent image too: the town launches it)."""
    try:
        build_images(docker_runtime.client, ImageConfig(), progress=lambda _line: None, town=True)
    except GastownError as exc:
        unavailable(f"the town image cannot be built: {exc}")
    return TOWN_IMAGE


@pytest.fixture(scope="session")
def compose_command() -> list[str]:
    """`docker compose` (the CLI plugin) or Debian 12's `docker-compose`, whichever this host has."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor `docker-compose` is installed: run scripts/install-docker.sh")
    raise AssertionError("unreachable")
