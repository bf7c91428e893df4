"""Fixtures for the MCP layer: one agent per role, in-process and HTTP clients, and store snapshots.

The HTTP server is real uvicorn on an ephemeral 127.0.0.1 port (`gastown_mcp.server.client.serve_http`); clients are
the SDK's own `mcp.Client`, so these tests see exactly what Claude Code would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from mcp import Client

from gastown_mcp.models import Agent, Role
from gastown_mcp.server import build_server
from gastown_mcp.server.client import connect_http, serve_http
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town

MODES = ["auto", "legacy"]
TABLES = ("beads", "deps", "labels", "comments", "events", "messages", "agents")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Both protocol eras: modern (2026-07-28, `server/discover`) and legacy (`initialize` handshake)."""
    return str(request.param)


@pytest.fixture
def crew(add_agent: Callable[..., Agent]) -> dict[str, Agent]:
    """A mayor, two polecats and one agent of every other role, by name."""
    names = {
        "mayor": Role.mayor,
        "polecat-1": Role.polecat,
        "polecat-2": Role.polecat,
        "witness": Role.witness,
        "overseer": Role.overseer,
        "refinery": Role.refinery,
        "deacon": Role.deacon,
        "dog-1": Role.dog,
    }
    return {name: add_agent(name, role) for name, role in names.items()}


@pytest.fixture
def connect(town: Town, mode: str) -> Callable[[Agent], AbstractAsyncContextManager[Client]]:
    """`async with connect(agent) as c:` an in-process client acting as `agent`, in this test's mode."""

    @asynccontextmanager
    async def make(agent: Agent) -> AsyncIterator[Client]:
        async with Client(build_server(town, agent), mode=mode) as client:  # type: ignore[arg-type]
            yield client

    return make


@pytest.fixture
def http_url(town: Town) -> Iterator[str]:
    """The `/mcp` URL of a real uvicorn server over this test's town."""
    with serve_http(town) as url:
        yield url


@pytest.fixture
def http_connect(
    http_url: str, credentials: dict[str, Credentials]
) -> Callable[..., AbstractAsyncContextManager[Client]]:
    """`async with http_connect("polecat-1") as c:` a client over HTTP with that agent's bearer token."""

    def make(name: str, mode: str = "auto") -> AbstractAsyncContextManager[Client]:
        return connect_http(http_url, credentials[name].token, mode=mode)

    return make


@pytest.fixture
def snapshot(store: Store) -> Callable[[], dict[str, Any]]:
    """`snapshot()`: the store's state that an invalid call must leave alone."""
    return lambda: take_snapshot(store)


@pytest.fixture
def events(store: Store) -> Callable[[str], list[str]]:
    """`events("bead.claimed")`: the bead ids of every event with that verb, in order."""
    return lambda verb: verbs(store, verb)


def take_snapshot(store: Store) -> dict[str, Any]:
    """Everything an invalid call must leave alone: row counts and the content of beads, deps and messages.

    Lease expiry and last_seen are left out: any call by an agent renews them, by design.
    """
    db = store.db
    counts = {t: db.query_one(f"SELECT count(*) AS n FROM {t}")["n"] for t in TABLES}  # type: ignore[index]
    beads = [
        tuple(r)
        for r in db.query(
            "SELECT id, title, description, acceptance, notes, type, priority, status, assignee, attempts, "
            "open_blockers, result, metadata, updated_at FROM beads ORDER BY id"
        )
    ]
    deps = [tuple(r) for r in db.query("SELECT bead_id, depends_on, kind FROM deps ORDER BY 1, 2, 3")]
    labels = [tuple(r) for r in db.query("SELECT bead_id, label FROM labels ORDER BY 1, 2")]
    messages = [tuple(r) for r in db.query("SELECT id, state FROM messages ORDER BY id")]
    return {"counts": counts, "beads": beads, "deps": deps, "labels": labels, "messages": messages}


def verbs(store: Store, verb: str) -> list[str]:
    """The bead ids of every event with `verb`, in order."""
    return [r["bead_id"] for r in store.db.query("SELECT bead_id FROM events WHERE verb=? ORDER BY id", (verb,))]
