"""Fixtures for the runtime tests: the real Docker engine, the agent image, a throwaway town name.

Without a reachable engine (or without root for the host firewall) the docker tests skip with the reason,
except when CI is set: there they fail, because CI must prove the sandbox.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from gastown_mcp.errors import GastownError
from gastown_mcp.runtime.docker_backend import DockerRuntime, connect
from gastown_mcp.runtime.image import ImageConfig, build_images
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE
from gastown_mcp.runtime.selftest import CheckResult, run_selftest


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so docker tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def runtime() -> Iterator[DockerRuntime]:
    try:
        client = connect(timeout_s=600)
    except GastownError as exc:
        unavailable(f"no Docker engine reachable: {exc}")
    rt = DockerRuntime(client, grace_s=2)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def agent_image(runtime: DockerRuntime) -> str:
    """The agent image, built (or found up to date) once per session."""
    try:
        build_images(runtime.client, ImageConfig(), progress=lambda _line: None)
    except GastownError as exc:
        unavailable(f"the agent image cannot be built: {exc}")
    return DEFAULT_IMAGE


@pytest.fixture(scope="session")
def root() -> None:
    if os.geteuid() != 0:
        unavailable("the town network's host firewall needs root (iptables)")


@pytest.fixture(scope="session")
def selftest(runtime: DockerRuntime, agent_image: str, root: None) -> dict[str, CheckResult]:
    """The containment self-test, run once; each test below asserts one of its checks."""
    return {r.name: r for r in run_selftest(runtime, agent_image)}


@pytest.fixture
def town_name(runtime: DockerRuntime) -> Iterator[str]:
    name = f"test-{secrets.token_hex(3)}"
    yield name
    runtime.cleanup(name)
