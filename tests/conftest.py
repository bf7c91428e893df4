"""Shared fixtures: a fresh town on a real SQLite file under tmp_path, and a helper to add agents; and, once per
session, the real Docker engine, the agent image and root for the tests that need them.

Each test gets its own `settings`, `store` and `town`; nothing is shared between tests. Without an engine,
the image or root, the Docker tests skip with the reason, except when CI is set: there they fail, because CI
must prove the sandbox and the factory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gastown_mcp.config import LeaseSection, Settings
from gastown_mcp.errors import GastownError
from gastown_mcp.models import Agent, Role
from gastown_mcp.runtime.docker_backend import DockerRuntime, connect
from gastown_mcp.runtime.image import TOWN_IMAGE, ImageConfig, build_images
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town
from gastown_mcp.town import operator as make_operator


def make_settings(town_dir: Path, *, lease_seconds: float = 600.0) -> Settings:
    town_dir.mkdir(parents=True, exist_ok=True)
    return Settings(town_dir=town_dir, lease=LeaseSection(seconds=lease_seconds))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "town")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings)
    yield s
    s.close()


@pytest.fixture
def town(store: Store, settings: Settings) -> Town:
    return Town(store, settings)


@pytest.fixture
def town_with_lease(store: Store, settings: Settings) -> Callable[[float], Town]:
    """Another `Town` on the same store with its own lease length (and a fresh renewal throttle)."""

    def make(lease_seconds: float) -> Town:
        return Town(store, settings.model_copy(update={"lease": LeaseSection(seconds=lease_seconds)}))

    return make


@pytest.fixture
def operator() -> Agent:
    return make_operator()


@pytest.fixture
def credentials() -> dict[str, Credentials]:
    """Every agent added with `add_agent`, by name, with its once-shown token."""
    return {}


@pytest.fixture
def add_agent(town: Town, operator: Agent, credentials: dict[str, Credentials]) -> Callable[..., Agent]:
    """`add_agent("polecat-3", "polecat")` registers an agent through the town and returns it."""

    def add(name: str, role: Role | str = Role.polecat, rig: str | None = None) -> Agent:
        creds = town.agent_add(operator, name, Role(role).value, rig)
        credentials[name] = creds
        return creds.agent

    return add


# -- the real Docker engine (tests marked `docker`) --------------------------------------------------------
def add_sample_rig(town_dir: Path, name: str = "proj") -> Path:
    """A one-commit git repository beside the town, added as rig `name`; returns the source repository."""
    from gastown_mcp import rigs

    source = town_dir.parent / "source"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("project\n")
    subprocess.run(["git", "-C", str(source), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "initial"],
        check=True,
    )
    rigs.add_rig(town_dir, name, str(source))
    return source


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the Docker tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_runtime() -> Iterator[DockerRuntime]:
    try:
        client = connect(timeout_s=600)
    except GastownError as exc:
        unavailable(f"no Docker engine reachable: {exc}")
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
def root() -> None:
    if os.geteuid() != 0:
        unavailable("the town network's host firewall needs root (iptables)")


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
