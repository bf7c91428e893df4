"""Shared fixtures: a fresh town on a real SQLite file under tmp_path, and a helper to add agents.

Each test gets its own `settings`, `store` and `town`; nothing is shared between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gastown_mcp.config import LeaseSection, Settings
from gastown_mcp.models import Agent, Role
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
