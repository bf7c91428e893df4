"""Tool bodies that do store work only run on the event loop, and answer only once their writes are durable;
when another writer holds the write lock, or the call needs slow work (a hand-in runs git), the body runs on a
worker thread instead, exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from mcp import Client

from gastown_mcp.models import Agent, AgentState, BeadBrief, Role, now_iso
from gastown_mcp.server.calls import Bodies, ToolThreads
from gastown_mcp.store import Store
from gastown_mcp.town import NeedsThread, Town, operator


async def test_a_quick_call_runs_on_the_loop_and_answers_once_its_writes_are_on_disk(
    http_connect: Callable[..., AbstractAsyncContextManager[Client]], crew: dict[str, Agent], town: Town, store: Store
) -> None:
    town.bead_create(operator(), "work")
    journal = store.db.journal
    assert journal is not None
    async with http_connect("polecat-1") as client:
        claimed = await client.call_tool("bead_claim", {})
        assert not claimed.is_error
        assert journal._synced == journal.path.stat().st_size  # the claim's journal line is on disk
        done = await client.call_tool("bead_complete", {"id": claimed.structured_content["id"], "summary": "did it"})
        assert not done.is_error
        assert journal._synced == journal.path.stat().st_size


async def test_a_quick_call_that_finds_the_write_lock_taken_runs_once_on_a_worker_thread(
    town: Town, store: Store, crew: dict[str, Agent]
) -> None:
    bead = town.bead_create(operator(), "contended").id
    loop_thread = threading.current_thread()
    ran_on: list[threading.Thread] = []
    on_worker, release, held = threading.Event(), threading.Event(), threading.Event()

    def claim(agent: Agent) -> BeadBrief:
        ran_on.append(threading.current_thread())
        if threading.current_thread() is not loop_thread:
            on_worker.set()  # the holder may let go now: this body waits for the lock
        return town.bead_claim_brief(agent, bead)

    def hold() -> None:
        with store.db.write():
            held.set()
            on_worker.wait(30)
            release.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    bodies = Bodies(town, ToolThreads(2))
    with anyio.fail_after(30):
        brief = await bodies.run(claim, crew["polecat-1"], quick=True)
    holder.join(30)
    assert release.is_set()
    assert [t is loop_thread for t in ran_on] == [True, False]  # tried on the loop, done on a worker thread
    assert brief.assignee == "polecat-1"
    claims = store.db.query("SELECT 1 FROM events WHERE verb='bead.claimed' AND bead_id=?", (bead,))
    assert len(claims) == 1


def test_a_hand_in_is_refused_on_the_loop_before_anything_changes(town: Town, store: Store) -> None:
    polecat = Agent(
        name="polecat-9",
        role=Role.polecat,
        rig="proj",
        state=AgentState.running,
        created_at=now_iso(),
        metadata={"branch": "polecat/polecat-9/gt-1", "worktree": "/nowhere"},
    )
    before = store.db.query("SELECT count(*) AS n FROM events")[0]["n"]
    with pytest.raises(NeedsThread), town.deferred_writes() as block:
        town.bead_complete_brief(polecat, "gt-1", "did it")
    assert not block.wrote
    assert store.db.query("SELECT count(*) AS n FROM events")[0]["n"] == before
