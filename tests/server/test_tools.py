"""Every tool through the SDK's real `Client`, in both protocol modes (the `mode` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from mcp import Client
from mcp_types import CallToolResult

from gastown_mcp.models import Agent
from gastown_mcp.server.client import result_text
from gastown_mcp.store import Store

Connect = Callable[[Agent], AbstractAsyncContextManager[Client]]


async def ok(client: Client, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    with anyio.fail_after(10):
        result = await client.call_tool(tool, args or {})
    assert not result.is_error, result_text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


async def err(client: Client, tool: str, args: dict[str, Any] | None = None) -> CallToolResult:
    with anyio.fail_after(10):
        result = await client.call_tool(tool, args or {})
    assert result.is_error, result.structured_content
    return result


async def test_every_tool_has_a_description_and_annotations(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["overseer"]) as c:
        tools = (await c.list_tools()).tools
    assert len(tools) >= 16
    for tool in tools:
        assert tool.description, tool.name
        assert tool.annotations is not None and tool.annotations.read_only_hint is not None, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None, tool.name
    read_only = {t.name for t in tools if t.annotations and t.annotations.read_only_hint}
    assert {"bead_show", "bead_list", "bead_ready", "town_status", "town_agents"} <= read_only
    assert not read_only & {"bead_create", "bead_claim", "bead_update", "bead_complete", "bead_release"}


async def test_bead_create_show_list_and_ready(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["mayor"]) as c:
        epic = await ok(c, "bead_create", {"title": "Epic", "type": "epic", "priority": 1, "labels": ["area:ui"]})
        child = await ok(c, "bead_create", {"title": "Child", "parent": epic["id"], "description": "do it"})
        assert child["id"] == f"{epic['id']}.1"
        waiting = await ok(c, "bead_create", {"title": "Later", "blocked_by": [child["id"]]})

        shown = await ok(c, "bead_show", {"id": child["id"]})
        assert shown["description"] == "do it"
        assert shown["created_by"] == "mayor"
        assert f"{child['id']} parent {epic['id']}" in shown["links"]

        listed = await ok(c, "bead_list", {"label": "area:ui"})
        assert [b["id"] for b in listed["beads"]] == [epic["id"]]
        assert listed["hint"].startswith("bead_show")
        assert set(listed["beads"][0]) <= {"id", "title", "status", "priority", "assignee"}

        ready = await ok(c, "bead_ready", {"limit": 10})
        ready_ids = [b["id"] for b in ready["beads"]]
        assert ready_ids[0] == epic["id"]  # priority 1 first
        assert waiting["id"] not in ready_ids


async def test_bead_claim_update_comment_complete(connect: Connect, crew: dict[str, Agent], store: Store) -> None:
    async with connect(crew["mayor"]) as mayor:
        bead = await ok(mayor, "bead_create", {"title": "Work"})
    async with connect(crew["polecat-1"]) as c:
        claimed = await ok(c, "bead_claim", {})
        assert claimed["id"] == bead["id"]
        assert claimed["status"] == "in_progress" and claimed["assignee"] == "polecat-1"
        assert claimed["lease_expires_at"]
        again = await ok(c, "bead_claim", {"id": bead["id"]})  # claiming what you hold renews the lease
        assert again["assignee"] == "polecat-1"

        updated = await ok(c, "bead_update", {"id": bead["id"], "notes": "half way"})
        assert updated["status"] == "in_progress"
        comment = await ok(c, "bead_comment", {"id": bead["id"], "body": "found a snag"})
        assert comment["bead_id"] == bead["id"] and comment["comment_id"] > 0

        done = await ok(c, "bead_complete", {"id": bead["id"], "summary": "did it", "branch": "pc1/work"})
        assert done["status"] == "done" and done["assignee"] == "polecat-1"
        shown = await ok(c, "bead_show", {"id": bead["id"]})
        assert shown["notes"] == "half way"
        assert shown["comments"] == ["polecat-1: found a snag"]
        assert shown["result"]["summary"] == "did it" and shown["result"]["branch"] == "pc1/work"
    assert store.beads.get(bead["id"]).status.value == "done"


async def test_bead_update_blocked_and_release(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["mayor"]) as mayor:
        first = await ok(mayor, "bead_create", {"title": "One", "priority": 0})
        second = await ok(mayor, "bead_create", {"title": "Two", "priority": 1})
    async with connect(crew["polecat-1"]) as c:
        await ok(c, "bead_claim", {"id": first["id"]})
        blocked = await ok(c, "bead_update", {"id": first["id"], "status": "blocked", "reason": "needs a key"})
        assert blocked["status"] == "blocked" and blocked["assignee"] is None

        await ok(c, "bead_claim", {"id": second["id"]})
        released = await ok(c, "bead_release", {"id": second["id"], "reason": "wrong skills"})
        assert released["status"] == "open" and released["assignee"] is None and released["attempts"] == 1
    async with connect(crew["mayor"]) as mayor:
        reopened = await ok(mayor, "bead_update", {"id": first["id"], "status": "open", "priority": 3})
        assert reopened["status"] == "open"
        cancelled = await ok(mayor, "bead_update", {"id": second["id"], "status": "cancelled", "reason": "dup"})
        assert cancelled["status"] == "cancelled"


async def test_bead_link_makes_a_bead_wait_and_refuses_cycles(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["mayor"]) as c:
        a = (await ok(c, "bead_create", {"title": "A"}))["id"]
        b = (await ok(c, "bead_create", {"title": "B"}))["id"]
        dep = await ok(c, "bead_link", {"id": b, "other": a})
        assert dep == {"bead_id": b, "depends_on": a, "kind": "blocks"}
        assert await ok(c, "bead_link", {"id": b, "other": a}) == dep  # idempotent
        ready = [r["id"] for r in (await ok(c, "bead_ready"))["beads"]]
        assert ready == [a]
        cycle = await err(c, "bead_link", {"id": a, "other": b})
        assert "cycle" in result_text(cycle)
        related = await ok(c, "bead_link", {"id": a, "other": b, "kind": "related"})
        assert related["kind"] == "related"


async def test_town_status_agents_and_heartbeat(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["mayor"]) as c:
        await ok(c, "bead_create", {"title": "Ready one"})
        status = await ok(c, "town_status")
        assert status["beads_by_status"] == {"open": 1} and status["ready"] == 1
        assert status["agents_by_role"]["polecat"] == 2
        agents = await ok(c, "town_agents", {"role": "polecat"})
        assert [a["name"] for a in agents["agents"]] == ["polecat-1", "polecat-2"]
        assert "token_hash" not in str(agents)
    async with connect(crew["polecat-1"]) as c:
        idle = await ok(c, "town_heartbeat")
        assert idle["agent"] == "polecat-1" and idle["holding"] == []
        held = await ok(c, "bead_claim")
        beat = await ok(c, "town_heartbeat")
        assert [b["id"] for b in beat["holding"]] == [held["id"]]
        assert beat["lease_expires_at"] >= held["lease_expires_at"]


async def test_mail_and_nudges_reach_the_inbox(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["polecat-1"]) as c:
        sent = await ok(c, "town_mail_send", {"to": "mayor", "subject": "stuck", "body": "need a key", "thread": "t1"})
        assert sent["to"] == "mayor" and sent["state"] == "sent"
    async with connect(crew["mayor"]) as c:
        inbox = await ok(c, "town_inbox")
        [mail] = inbox["messages"]
        assert (mail["sender"], mail["subject"], mail["body"]) == ("polecat-1", "stuck", "need a key")
        acked = await ok(c, "town_inbox", {"ack": [mail["id"]]})
        assert acked["messages"] == []
        assert len((await ok(c, "town_inbox", {"unread_only": False}))["messages"]) == 1
        nudge = await ok(c, "town_nudge", {"to": "polecat-2", "text": "wake up"})
        assert nudge["to"] == "polecat-2"
    async with connect(crew["polecat-2"]) as c:
        # Reading the inbox delivers the nudge, so it does not ride on this or a later result as well.
        inbox = await c.call_tool("town_inbox", {})
        assert [m["body"] for m in inbox.structured_content["messages"]] == ["wake up"]  # type: ignore[index]
        assert inbox.structured_content["messages"][0]["state"] == "delivered"  # type: ignore[index]
        later = await c.call_tool("bead_ready", {})
        assert "NUDGE" not in result_text(inbox) + result_text(later)


async def test_a_write_tool_returns_the_bead_once_structured_with_a_one_line_text(
    connect: Connect, crew: dict[str, Agent]
) -> None:
    async with connect(crew["mayor"]) as c:
        made = await ok(c, "bead_create", {"title": "Paint the shed"})
    async with connect(crew["polecat-1"]) as c:
        with anyio.fail_after(10):
            claimed = await c.call_tool("bead_claim", {"id": made["id"]})
            done = await c.call_tool("bead_complete", {"id": made["id"], "summary": "painted"})
    assert claimed.structured_content is not None and done.structured_content is not None
    assert claimed.structured_content["status"] == "in_progress"
    assert claimed.structured_content["assignee"] == "polecat-1"
    assert claimed.structured_content["lease_expires_at"]
    assert done.structured_content["status"] == "done" and done.structured_content["lease_expires_at"] is None
    # The text is a summary line for clients that read text only, not a JSON copy of the same bead.
    claim_text, done_text = result_text(claimed), result_text(done)
    assert "\n" not in claim_text and "{" not in claim_text
    assert claim_text.startswith(f"{made['id']} is in_progress, assignee polecat-1, lease until ")
    assert claim_text.endswith(": Paint the shed")
    assert done_text == f"{made['id']} is done, assignee polecat-1: Paint the shed"
