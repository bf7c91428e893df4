"""Fixtures for the runtime tests, on the engine, image and root fixtures of tests/conftest.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.selftest import CheckResult, run_selftest


@pytest.fixture(scope="session")
def runtime(docker_runtime: DockerRuntime) -> DockerRuntime:
    return docker_runtime


@pytest.fixture(scope="session")
def selftest(runtime: DockerRuntime, agent_image: str, root: None) -> dict[str, CheckResult]:
    """The containment self-test, run once; each test below asserts one of its checks."""
    return {r.name: r for r in run_selftest(runtime, agent_image)}


@pytest.fixture
def town_name(runtime: DockerRuntime) -> Iterator[str]:
    name = f"test-{secrets.token_hex(3)}"
    yield name
    runtime.cleanup(name)
