"""Agents in the store: identity, lifecycle state, credentials kept only as hashes, and liveness."""

from __future__ import annotations

import time

import pytest

from gastown_mcp.errors import Conflict, NotFound
from gastown_mcp.models import AgentState, Role, Verb
from gastown_mcp.store import Store
from gastown_mcp.store.agents import secret_hash
from gastown_mcp.store.db import now_iso


def test_a_new_agent_gets_a_token_and_gateway_key_stored_only_as_hashes(store: Store) -> None:
    creds = store.agents.create("operator", "polecat-1", Role.polecat, rig="web", metadata={"image": "x"})
    agent = creds.agent
    assert (agent.name, agent.role, agent.rig, agent.state, agent.metadata) == (
        "polecat-1",
        Role.polecat,
        "web",
        AgentState.requested,
        {"image": "x"},
    )
    row = store.db.query_one("SELECT * FROM agents WHERE name='polecat-1'")
    assert row["token_hash"] == secret_hash(creds.token) and row["gateway_key_hash"] == secret_hash(creds.gateway_key)
    dump = " ".join(str(v) for v in tuple(row))
    assert creds.token not in dump and creds.gateway_key not in dump
    assert store.agents.by_token(creds.token) == agent
    assert store.agents.by_gateway_key(creds.gateway_key) == agent
    assert store.agents.by_token(creds.gateway_key) is None


def test_agent_names_are_unique_while_active(store: Store) -> None:
    store.agents.create("operator", "polecat-1", Role.polecat)
    with pytest.raises(Conflict, match="agent 'polecat-1' already exists"):
        store.agents.create("operator", "polecat-1", Role.witness)
    assert store.agents.get("polecat-1").role is Role.polecat


def test_an_unknown_agent_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no agent 'ghost'"):
        store.agents.get("ghost")
    assert store.agents.find("ghost") is None
    with pytest.raises(NotFound):
        store.agents.rotate("operator", "ghost")
    with pytest.raises(NotFound):
        store.agents.set_state("operator", "ghost", AgentState.running)


def test_state_changes_are_recorded_once(store: Store) -> None:
    store.agents.create("operator", "polecat-1", Role.polecat)
    store.agents.set_state("witness", "polecat-1", AgentState.running, container="abc")
    store.agents.set_state("witness", "polecat-1", AgentState.running)
    agent = store.agents.set_state("witness", "polecat-1", AgentState.stalled, "no calls for 5 min")
    assert agent.state is AgentState.stalled and agent.metadata == {"container": "abc"}
    events = [(e.verb, e.before, e.after) for e in store.events.since(agent="polecat-1")]
    assert events == [
        (Verb.agent_created, None, {"role": "polecat", "rig": None}),
        (Verb.agent_running, {"state": "requested"}, {"state": "running", "reason": "", "container": "abc"}),
        (Verb.agent_stalled, {"state": "running"}, {"state": "stalled", "reason": "no calls for 5 min"}),
    ]


def test_a_removed_agent_loses_its_credentials_and_leaves_the_list(store: Store) -> None:
    creds = store.agents.create("operator", "polecat-1", Role.polecat)
    store.agents.create("operator", "witness-1", Role.witness)
    store.agents.set_state("operator", "polecat-1", AgentState.removed, "retired")
    assert store.agents.by_token(creds.token) is None and store.agents.by_gateway_key(creds.gateway_key) is None
    assert [a.name for a in store.agents.all()] == ["witness-1"]
    assert {a.name for a in store.agents.all(include_removed=True)} == {"polecat-1", "witness-1"}
    assert [a.name for a in store.agents.all(role=Role.witness)] == ["witness-1"]
    row = store.db.query_one("SELECT token_hash, gateway_key_hash, removed_at FROM agents WHERE name='polecat-1'")
    assert (row["token_hash"], row["gateway_key_hash"]) == (None, None) and row["removed_at"] is not None


def test_rotating_credentials_revokes_the_old_ones(store: Store) -> None:
    old = store.agents.create("operator", "polecat-1", Role.polecat)
    new = store.agents.rotate("operator", "polecat-1")
    assert store.agents.by_token(old.token) is None and store.agents.by_gateway_key(old.gateway_key) is None
    assert store.agents.by_token(new.token) == new.agent
    assert store.events.since(agent="polecat-1")[-1].verb == Verb.agent_token_rotated


def test_touch_records_last_seen_and_renews_only_the_agents_in_progress_beads(store: Store) -> None:
    store.agents.create("operator", "polecat-1", Role.polecat)
    mine = store.beads.create("mayor", title="mine")
    theirs = store.beads.create("mayor", title="theirs")
    store.beads.claim("polecat-1", mine.id, 5)
    store.beads.claim("polecat-2", theirs.id, 5)
    theirs_lease = store.beads.get(theirs.id).lease_expires_at
    events = store.events.last_id()
    store.agents.touch("polecat-1", 600)
    assert store.agents.get("polecat-1").last_seen is not None
    assert (store.beads.get(mine.id).lease_expires_at or "") > now_iso(time.time() + 500)
    assert store.beads.get(theirs.id).lease_expires_at == theirs_lease
    assert store.events.last_id() == events, "liveness is not audited"
