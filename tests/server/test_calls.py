"""Tool bodies that do store work only run on the event loop, and answer only once their writes are durable;
when another writer holds the write lock, or the call needs slow work (a hand-in runs git), the body runs on a
worker thread instead, exactly once."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from gastown_mcp import serving
from gastown_mcp.models import Agent, AgentState, BeadBrief, Role, now_iso
from gastown_mcp.server import http_app
from gastown_mcp.server.calls import Bodies, ToolThreads
from gastown_mcp.server.gate import AgentGate
from gastown_mcp.store import Credentials, Store
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


META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def call(name: str, arguments: dict[str, Any], header_name: str | None = None) -> tuple[dict[str, str], bytes]:
    """A raw 2026-07-28 `tools/call` POST: its headers and body."""
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    body["params"]["_meta"] = META
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": header_name or name,
    }
    return headers, json.dumps(body).encode()


async def test_the_quick_lane_answers_byte_for_byte_as_the_sdks_default_path(
    town: Town, crew: dict[str, Agent], credentials: dict[str, Credentials]
) -> None:
    """The same calls to two servers over one town, one with the quick lane and one without: the same status,
    headers and body (ids and lease times aside), for answers, tool errors, bad arguments and lying headers."""
    op = operator()
    beads = [town.bead_create(op, "same title").id for _ in range(2)]
    token = credentials["polecat-1"].token
    calls = [
        call("bead_claim", {"id": "gt-nothere"}),  # a tool error
        call("bead_complete", {"id": "gt-nothere"}),  # a missing argument
        call("bead_complete", {"id": "gt-nothere", "summary": "x" * 20001}),  # too long
        call("bead_complete", {"id": "gt-nothere", "summary": "x"}, header_name="bead_claim"),  # headers lie
        call("bead_claim", {"id": "{bead}"}),
        call("bead_complete", {"id": "{bead}", "summary": "done"}),
    ]
    answers: list[list[tuple[int, list[tuple[str, str]], str]]] = []
    for lane, bead in zip((True, False), beads, strict=True):
        sock = serving.bind("127.0.0.1")
        app = http_app(town, "127.0.0.1", sock.getsockname()[1])
        gate = app.app
        assert isinstance(gate, AgentGate) and gate.quick_lane is not None
        if not lane:
            gate.quick_lane = None
        got = []
        with serving.serve_in_thread(app, sock) as url:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                for headers, body in calls:
                    with anyio.fail_after(30):
                        r = await http.post(
                            f"{url}/mcp", content=body.replace(b"{bead}", bead.encode()), headers=headers
                        )
                    text = r.text.replace(bead, "BEAD")
                    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z|\d\d:\d\d:\d\d UTC", "TIME", text)
                    kept = [(k, v) for k, v in r.headers.items() if k not in ("date", "content-length")]
                    got.append((r.status_code, kept, text))
        answers.append(got)
    assert answers[0] == answers[1]
    statuses = [status for status, _, _ in answers[0]]
    assert statuses[0] == 200 and '"isError":true' in answers[0][0][2]
    assert statuses[3] == 400  # the SDK's header check still runs in the lane
    assert '"status":"in_progress"' in answers[0][4][2] and '"status":"done"' in answers[0][5][2]


async def test_the_loop_syncs_itself_only_when_nothing_else_waits_for_it() -> None:
    """A call that has the loop to itself syncs on the loop; with a callback ready or a socket with data waiting,
    the sync goes to a thread so the loop serves the others (whose writes then share one fdatasync)."""
    import asyncio
    import socket

    from gastown_mcp.server.calls import loop_idle

    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    assert loop_idle(loop)
    handle = loop.call_soon(lambda: None)
    assert not loop_idle(loop)
    handle.cancel()
    await asyncio.sleep(0)
    a, b = socket.socketpair()
    try:
        loop.add_reader(a.fileno(), lambda: None)
        assert loop_idle(loop)  # registered, nothing waiting
        b.send(b"x")
        assert not loop_idle(loop)
        assert not loop_idle(loop)  # looking took nothing away: the loop still sees it
        loop.remove_reader(a.fileno())
    finally:
        a.close()
        b.close()
