"""The witness's work per tick does not grow with the agents that ever lived: it reads live agents (an indexed
read) and exited ones with a nudge waiting, and exited agents past the retention leave the hot table."""

from __future__ import annotations

import time

import pytest
from fakes import Clock, FakeRuntime

from gastown_mcp.config import Settings
from gastown_mcp.errors import Conflict
from gastown_mcp.models import AgentState
from gastown_mcp.store import Store
from gastown_mcp.supervisor.witness import Witness
from gastown_mcp.town import Town, operator
from gastown_mcp.town.fleet import Fleet, FleetConfig


def _town(store: Store, settings: Settings) -> Town:
    config = FleetConfig(town="town", town_dir=settings.town_dir, mcp_url="http://town/mcp")
    return Town(store, settings, Fleet(store, FakeRuntime(), config))


def _exited(town: Town, first: int, n: int) -> None:
    op = operator()
    for i in range(first, first + n):
        name = f"gone-{i}"
        town.agent_add(op, name, "polecat", "web")
        town.agent_exited(op, name, "ok", 0)


def _tick_steps(store: Store, witness: Witness) -> int:
    """SQLite virtual-machine steps (in hundreds) one witness tick costs: its reads, whatever they scan."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn = store.db.conn
    for _ in range(3):  # catch up with the events of the agents added since the last tick (1,000 a tick)
        witness.tick()
    conn.set_progress_handler(count, 100)
    try:
        witness.tick()
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0]


def test_a_witness_ticks_reads_do_not_grow_with_exited_agents(store: Store, settings: Settings) -> None:
    town = _town(store, settings)
    op = operator()
    for i in range(3):
        town.agent_add(op, f"live-{i}", "polecat", "web")
        town.set_agent_state(op, f"live-{i}", AgentState.running)
    witness = Witness(town, clock=Clock())
    _exited(town, 0, 10)
    few = _tick_steps(store, witness)
    _exited(town, 10, 400)
    many = _tick_steps(store, witness)
    assert many <= few * 1.2 + 5, (few, many)
    moved = town.compact(op, at=time.time() + settings.dogs.agent_archive_seconds + 60)
    assert moved["agents_archived"] == 410
    assert _tick_steps(store, witness) <= few * 1.2 + 5


def test_archived_agents_leave_the_hot_table_but_keep_their_names_and_history(store: Store, settings: Settings) -> None:
    town = _town(store, settings)
    op = operator()
    _exited(town, 0, 3)
    town.agent_add(op, "recent", "polecat", "web")
    town.agent_exited(op, "recent", "ok", 0)
    town.agent_add(op, "live", "polecat", "web")
    town.set_agent_state(op, "live", AgentState.running)
    later = time.time() + settings.dogs.agent_archive_seconds + 60
    store.db.conn.execute(  # "recent" exited just now, the others long ago
        "UPDATE agents SET metadata = json_set(metadata, '$.ended_at', ?) WHERE name = 'recent'",
        ("9999-01-01T00:00:00.000000Z",),
    )
    assert town.compact(op, at=later)["agents_archived"] == 3
    hot = {r[0] for r in store.db.conn.execute("SELECT name FROM agents")}
    assert hot == {"recent", "live"}
    gone = town.agent("gone-1")  # still found by name (CLI, logs), from the archive
    assert gone.state is AgentState.exited and gone.metadata["exit_reason"] == "ok"
    assert [a.name for a in town.alive_agents(op)] == ["live"]
    with pytest.raises(Conflict, match="archived"):
        town.agent_add(op, "gone-1", "polecat")
    assert store.agents.free_name(["gone-0", "gone-2", "nux"], "gone") == "nux"
    assert store.agents.free_name(["gone-0"], "gone") not in {"gone-0", "gone-1", "gone-2"}  # archived names stay taken
