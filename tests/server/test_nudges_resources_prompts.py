"""Nudges ride on the next tool result exactly once; resources and role prompts read through the client."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from mcp import Client
from mcp_types import TextResourceContents

from gastown_mcp.models import Agent, MessageState, Role
from gastown_mcp.server.client import nudges_in, result_text
from gastown_mcp.store import Store
from gastown_mcp.town import roles

Connect = Callable[[Agent], AbstractAsyncContextManager[Client]]


async def test_a_nudge_rides_on_the_next_tool_result_once(
    connect: Connect, crew: dict[str, Agent], store: Store
) -> None:
    async with connect(crew["mayor"]) as mayor:
        sent = await mayor.call_tool("town_nudge", {"to": "polecat-1", "text": "check bead gt-1"})
        assert not sent.is_error
    [pending] = store.messages.nudges("polecat-1")
    assert pending.state is MessageState.sent
    async with connect(crew["polecat-1"]) as c:
        with anyio.fail_after(10):
            first = await c.call_tool("bead_ready", {})
            second = await c.call_tool("bead_ready", {})
    assert nudges_in(first) == [f"NUDGE from mayor (#{pending.id}): check bead gt-1"]
    # Claude Code shows the model only the structured content, so the nudge is there too (the schema allows it).
    assert first.structured_content == {
        "beads": [],
        "hint": "bead_show ID for details",
        "nudges": [f"NUDGE from mayor (#{pending.id}): check bead gt-1"],
    }
    assert nudges_in(second) == []
    [delivered] = store.messages.nudges("polecat-1")
    assert delivered.state is MessageState.delivered and delivered.delivered_at is not None
    assert [r["after"] for r in store.db.query("SELECT after FROM events WHERE verb='nudge.delivered'")] == [
        json.dumps({"message_id": pending.id})
    ]


async def test_a_nudge_also_rides_on_a_tool_error(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["witness"]) as w:
        assert not (await w.call_tool("town_nudge", {"to": "polecat-2", "text": "you there?"})).is_error
    async with connect(crew["polecat-2"]) as c:
        refused = await c.call_tool("bead_show", {"id": "gt-nope"})
    assert refused.is_error
    assert "no bead 'gt-nope'" in result_text(refused)
    assert nudges_in(refused) == ["NUDGE from witness (#1): you there?"]


async def test_nudges_reach_only_their_recipient(connect: Connect, crew: dict[str, Agent], store: Store) -> None:
    async with connect(crew["mayor"]) as mayor:
        await mayor.call_tool("town_nudge", {"to": "polecat-1", "text": "one"})
        await mayor.call_tool("town_nudge", {"to": "polecat-1", "text": "two"})
    async with connect(crew["polecat-2"]) as other:
        assert nudges_in(await other.call_tool("bead_ready", {})) == []
    async with connect(crew["polecat-1"]) as c:
        lines = nudges_in(await c.call_tool("bead_ready", {}))
    assert lines == ["NUDGE from mayor (#1): one\nNUDGE from mayor (#2): two"]
    assert {m.state for m in store.messages.nudges("polecat-1")} == {MessageState.delivered}


async def test_bead_and_status_resources_read(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["mayor"]) as c:
        bead = (await c.call_tool("bead_create", {"title": "Readable", "labels": ["x"]})).structured_content
        assert bead is not None
        templates = (await c.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["bead://{id}"]
        assert "town://status" in [str(r.uri) for r in (await c.list_resources()).resources]

        [content] = (await c.read_resource(f"bead://{bead['id']}")).contents
        assert isinstance(content, TextResourceContents) and content.mime_type == "application/json"
        data = json.loads(content.text)
        assert (data["id"], data["title"], data["labels"]) == (bead["id"], "Readable", ["x"])

        [status] = (await c.read_resource("town://status")).contents
        assert isinstance(status, TextResourceContents)
        assert json.loads(status.text)["beads_by_status"] == {"open": 1}


async def test_an_unknown_bead_resource_is_an_error_naming_the_id(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["mayor"]) as c:
        with pytest.raises(Exception, match="gt-missing"):
            await c.read_resource("bead://gt-missing")
        assert not (await c.call_tool("bead_ready", {})).is_error  # still serving


@pytest.mark.parametrize("role", list(Role))
async def test_each_role_has_a_prompt_stating_its_rules(role: Role, connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["overseer"]) as c:  # the overseer reads every role's prompt
        prompts = {p.name: p for p in (await c.list_prompts()).prompts}
        assert set(prompts) == {r.value for r in Role}
        assert prompts[role.value].description
        got = await c.get_prompt(role.value)
    text = "\n".join(m.content.text for m in got.messages if m.content.type == "text")  # type: ignore[union-attr]
    assert len(text) > 200
    assert "GUPP" in text
    if roles.can(role, "bead.claim"):  # roles that work beads are told to claim first and complete after
        assert "claim" in text.lower() and "complete" in text.lower()


async def test_the_polecat_prompt_states_gupp_claim_complete_and_side_work(
    connect: Connect, crew: dict[str, Agent]
) -> None:
    async with connect(crew["polecat-1"]) as c:
        got = await c.get_prompt("polecat")
    text = got.messages[0].content.text  # type: ignore[union-attr]
    for needle in ("GUPP", "bead_claim", "bead_complete", "summary", "bead_create"):
        assert needle in text, needle


@pytest.mark.parametrize("who", ["polecat-1", "witness", "mayor", "dog-1"])
async def test_a_role_lists_and_gets_only_its_own_prompt(who: str, connect: Connect, crew: dict[str, Agent]) -> None:
    agent = crew[who]
    others = [r.value for r in Role if r is not agent.role]
    async with connect(agent) as c:
        with anyio.fail_after(10):
            listed = [p.name for p in (await c.list_prompts()).prompts]
            own = await c.get_prompt(agent.role.value)
            refused = []
            for name in others:
                with pytest.raises(Exception, match=f"may not read the {name} prompt") as raised:
                    await c.get_prompt(name)
                refused.append(str(raised.value))
    assert listed == [agent.role.value]
    assert own.messages and len(refused) == len(others)


async def test_resources_are_listed_and_read_only_with_the_permission_behind_them(
    connect: Connect, crew: dict[str, Agent]
) -> None:
    async with connect(crew["mayor"]) as mayor:
        bead = (await mayor.call_tool("bead_create", {"title": "Readable"})).structured_content
        assert bead is not None
    async with connect(crew["polecat-1"]) as c:  # beads are readable; the town's status is not (no town.status)
        with anyio.fail_after(10):
            listed = [str(r.uri) for r in (await c.list_resources()).resources]
            templates = [t.uri_template for t in (await c.list_resource_templates()).resource_templates]
            [content] = (await c.read_resource(f"bead://{bead['id']}")).contents
            with pytest.raises(Exception, match="polecat-1 \\(polecat\\) may not read town://status"):
                await c.read_resource("town://status")
    assert listed == [] and templates == ["bead://{id}"]
    assert isinstance(content, TextResourceContents) and bead["id"] in content.text
