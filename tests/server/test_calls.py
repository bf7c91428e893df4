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


def call(
    name: str,
    arguments: dict[str, Any],
    header_name: str | None = None,
    *,
    request_id: int | str = 7,
    meta: dict[str, Any] | None = None,
    **headers: str,
) -> tuple[dict[str, str], bytes]:
    """A raw 2026-07-28 `tools/call` POST: its headers and body."""
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    body["params"]["_meta"] = META if meta is None else meta
    sent = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": header_name or name,
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return sent, json.dumps(body).encode()


async def test_direct_calls_answer_byte_for_byte_as_the_sdks_handler_and_its_default_path(
    town: Town, crew: dict[str, Agent], credentials: dict[str, Credentials], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same calls to three servers over one town: direct answers (`direct.DirectCalls`), the SDK's handler
    alone (the quick lane) and the SDK's default path. Same status, headers and body (ids and lease times aside)
    for answers, tool errors, every argument limit, bad arguments, lying headers, a foreign origin, a caller with
    a nudge waiting, a role that may not call the tool, and a body that fails."""
    from gastown_mcp.server.direct import DirectCalls

    op = operator()
    beads = [town.bead_create(op, 'same title \u00e9 "quoted" \U0001f600').id for _ in range(3)]
    real_claim = town.bead_claim_brief

    def claim(agent: Agent, bead_id: str | None = None) -> BeadBrief:
        if bead_id == "gt-boom":
            raise RuntimeError("the body failed")
        return real_claim(agent, bead_id)

    monkeypatch.setattr(town, "bead_claim_brief", claim)
    polecat, witness = credentials["polecat-1"].token, credentials["witness"].token
    calls: list[tuple[str, dict[str, str], bytes]] = [
        (polecat, *call("bead_claim", {"id": "gt-nothere"})),  # a tool error (after the nudge: see below)
        (polecat, *call("bead_claim", {"id": "x" * 200})),  # at the limit
        (polecat, *call("bead_claim", {"id": "x" * 201})),  # over it
        (polecat, *call("bead_claim", {"id": 5})),  # not a string
        (polecat, *call("bead_claim", {"id": "gt-nothere", "extra": 1})),  # an argument the tool lacks
        (polecat, *call("bead_claim", {"id": "gt-boom"})),  # the body fails
        (polecat, *call("bead_claim", {}, request_id="text-id")),  # the top ready bead, a string request id
        (polecat, *call("bead_complete", {"id": "gt-nothere"})),  # a missing argument
        (polecat, *call("bead_complete", {"id": "gt-nothere", "summary": "x" * 20000, "branch": None})),
        (polecat, *call("bead_complete", {"id": "gt-nothere", "summary": "x" * 20001})),
        (polecat, *call("bead_complete", {"id": "gt-nothere", "summary": "x", "branch": "b" * 301})),
        (polecat, *call("bead_complete", {"id": "gt-nothere", "summary": "x", "commit": "c" * 101})),
        (polecat, *call("bead_complete", {"id": "gt-nothere", "summary": "x"}, header_name="bead_claim")),  # lies
        (polecat, *call("bead_claim", {"id": "gt-nothere"}, meta={**META, "progressToken": 1})),
        (polecat, *call("bead_claim", {"id": "gt-nothere"}, meta={})),  # no envelope
        (polecat, *call("bead_claim", {"id": "gt-nothere"}, Origin="http://evil.example")),
        (polecat, *call("bead_claim", {"id": "gt-nothere"}, Host="evil.example")),  # DNS rebinding
        (witness, *call("bead_claim", {"id": "gt-nothere"})),  # a role that may not claim
        (polecat, *call("bead_claim", {"id": "{bead}"})),
        (polecat, *call("bead_complete", {"id": "{bead}", "summary": "done", "branch": "b" * 300, "commit": "c"})),
    ]
    direct_served = [0]
    answers: list[list[tuple[int, list[tuple[str, str]], str]]] = []
    for lane, bead in zip(("direct", "sdk", "default"), beads, strict=True):
        sock = serving.bind("127.0.0.1")
        app = http_app(town, "127.0.0.1", sock.getsockname()[1])
        gate = app.app
        assert isinstance(gate, AgentGate) and isinstance(gate.quick_lane, DirectCalls)
        if lane == "direct":

            async def counted(scope: Any, receive: Any, send: Any, fallback: Any = gate.quick_lane.fallback) -> None:
                direct_served[0] -= 1
                await fallback(scope, receive, send)

            gate.quick_lane.fallback = counted
        elif lane == "sdk":
            gate.quick_lane = gate.quick_lane.fallback
        else:
            gate.quick_lane = None
        town.nudge(op, "polecat-1", "rebase first")  # the first call's answer carries it, whichever path
        got = []
        with serving.serve_in_thread(app, sock) as url:
            async with httpx2.AsyncClient() as http:
                for token, headers, body in calls:
                    with anyio.fail_after(30):
                        r = await http.post(
                            f"{url}/mcp",
                            content=body.replace(b"{bead}", bead.encode()),
                            headers={**headers, "Authorization": f"Bearer {token}"},
                        )
                    if lane == "direct":
                        direct_served[0] += 1
                    text = r.text.replace(bead, "BEAD")
                    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z|\d\d:\d\d:\d\d UTC", "TIME", text)
                    text = re.sub(r"gt-[a-z0-9]{4,}", "gt-ID", text)  # the top ready bead differs per lane
                    text = re.sub(r"\(#\d+\)", "(#N)", text)  # each lane's nudge is a message of its own
                    kept = [(k, v) for k, v in r.headers.items() if k not in ("date", "content-length")]
                    got.append((r.status_code, kept, text))
        answers.append(got)
    assert answers[0] == answers[1] == answers[2]
    first, at_limit, over = answers[0][0][2], answers[0][1][2], answers[0][2][2]
    assert '"isError":true' in first and "rebase first" in first
    assert "no bead" in at_limit and "no bead" not in over  # the limit: a look-up, then a refusal of the argument
    assert answers[0][5][2].count("Error executing tool bead_claim") == 1 and "failed" not in answers[0][5][2]
    statuses = [status for status, _, _ in answers[0]]
    assert statuses[12] == 400 and statuses[15] == 403 and statuses[16] == 421  # lying headers, origin, host
    assert '"status":"in_progress"' in answers[0][-2][2] and '"status":"done"' in answers[0][-1][2]
    # Answered directly: the at-limit claim, the failing body, the top ready bead, the complete at its limits,
    # the claim and the complete of the bead; everything else went to the SDK.
    assert direct_served[0] == 6


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


async def test_the_mcp_clients_own_claims_and_completions_are_answered_directly(
    http_connect: Callable[..., AbstractAsyncContextManager[Client]],
    http_url: str,
    crew: dict[str, Agent],
    town: Town,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The form `direct` takes is the one the SDK's own client sends: none of its claims or completions falls
    back to the SDK's handler (were the client to change its form, the calls would still work, only slower)."""
    from gastown_mcp.server import direct

    answered: list[str] = []
    real_body = direct._body

    def body(town: Town, name: str, arguments: dict[str, Any]) -> Any:
        answered.append(name)  # only the direct path builds the body here
        return real_body(town, name, arguments)

    monkeypatch.setattr(direct, "_body", body)
    op = operator()
    for _ in range(2):
        town.bead_create(op, "work")
    async with http_connect("polecat-1") as client:
        for _ in range(2):
            claimed = await client.call_tool("bead_claim", {})
            assert not claimed.is_error
            done = await client.call_tool("bead_complete", {"id": claimed.structured_content["id"], "summary": "x"})
            assert not done.is_error
    assert answered == ["bead_claim", "bead_complete"] * 2
