"""Each role sees only the tools it may call, and a refused call is a tool error that names the agent."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from mcp import Client

from gastown_mcp.models import Agent, Role
from gastown_mcp.server import build_server
from gastown_mcp.server.client import result_text
from gastown_mcp.town import Town, roles

Connect = Callable[[Agent], AbstractAsyncContextManager[Client]]
BASE = {
    "bead_create",
    "bead_show",
    "bead_list",
    "bead_ready",
    "bead_claim",
    "bead_update",
    "bead_comment",
    "bead_complete",
    "bead_release",
    "bead_link",
    "town_status",
    "town_agents",
    "town_nudge",
    "town_inbox",
    "town_mail_send",
    "town_heartbeat",
}


async def served(town: Town) -> set[str]:
    return {t.name for t in await build_server(town).list_tools()}


async def test_the_server_defines_every_bead_and_town_tool(town: Town) -> None:
    assert await served(town) >= BASE


@pytest.mark.parametrize("role", list(Role))
async def test_a_role_lists_exactly_the_tools_it_may_call(
    role: Role, connect: Connect, add_agent: Callable[..., Agent], town: Town
) -> None:
    agent = add_agent(f"{role.value}-1", role)
    async with connect(agent) as c:
        with anyio.fail_after(10):
            listed = [t.name for t in (await c.list_tools()).tools]
    # roles.py may name tools a later issue serves (town_budget, ...): the served ones must match exactly.
    assert sorted(listed) == sorted(set(roles.tools_for(role)) & await served(town))
    assert BASE & set(roles.tools_for(role)) <= set(listed)
    assert len(listed) == len(set(listed))


def test_the_polecat_profile_is_fully_served_and_small() -> None:
    tools = set(roles.tools_for(Role.polecat))
    assert tools <= BASE
    assert tools == {
        "bead_create",
        "bead_show",
        "bead_list",
        "bead_ready",
        "bead_claim",
        "bead_update",
        "bead_comment",
        "bead_complete",
        "bead_release",
        "town_inbox",
        "town_mail_send",
        "town_heartbeat",
    }


@pytest.mark.parametrize(
    ("name", "tool", "args"),
    [
        ("polecat-1", "bead_link", {"id": "gt-1", "other": "gt-2"}),
        ("polecat-1", "town_nudge", {"to": "mayor", "text": "hi"}),
        ("polecat-1", "town_status", {}),
        ("polecat-1", "town_agents", {}),
        ("witness", "bead_create", {"title": "x"}),
        ("witness", "bead_claim", {}),
        ("dog-1", "bead_release", {"id": "gt-1"}),
        ("dog-1", "town_nudge", {"to": "mayor", "text": "hi"}),
    ],
)
async def test_a_tool_outside_the_role_is_refused_as_a_tool_error(
    name: str, tool: str, args: dict[str, object], connect: Connect, crew: dict[str, Agent]
) -> None:
    async with connect(crew[name]) as c:
        with anyio.fail_after(10):
            result = await c.call_tool(tool, args)
    assert result.is_error
    assert result_text(result) == f"{name} ({crew[name].role.value}) may not call {tool}"


async def test_a_tool_that_does_not_exist_is_reported_as_unknown_not_as_forbidden(
    connect: Connect, crew: dict[str, Agent]
) -> None:
    async with connect(crew["mayor"]) as c:
        with anyio.fail_after(10):
            result = await c.call_tool("test_simple_text", {})
    assert result.is_error
    assert result_text(result) == (
        "unknown tool 'test_simple_text': there is no such tool; tools/list shows the ones mayor (mayor) may call"
    )


async def test_a_polecat_may_not_complete_a_bead_another_polecat_holds(
    connect: Connect, crew: dict[str, Agent]
) -> None:
    async with connect(crew["mayor"]) as mayor:
        bead = (await mayor.call_tool("bead_create", {"title": "Shared"})).structured_content["id"]  # type: ignore[index]
    async with connect(crew["polecat-1"]) as one, connect(crew["polecat-2"]) as two:
        assert not (await one.call_tool("bead_claim", {"id": bead})).is_error
        stolen = await two.call_tool("bead_claim", {"id": bead})
        assert stolen.is_error and "claimed by polecat-1" in result_text(stolen)
        for tool, args in [
            ("bead_complete", {"id": bead, "summary": "mine now"}),
            ("bead_release", {"id": bead}),
            ("bead_update", {"id": bead, "notes": "x"}),
        ]:
            refused = await two.call_tool(tool, args)
            assert refused.is_error, tool
            assert "polecat-2 may not" in result_text(refused) and "polecat-1" in result_text(refused)


async def test_a_polecat_may_change_only_notes_and_blocked_on_its_bead(
    connect: Connect, crew: dict[str, Agent]
) -> None:
    async with connect(crew["polecat-1"]) as c:
        created = await c.call_tool("bead_create", {"title": "Side work", "priority": 3})
        assert not created.is_error
        bead = created.structured_content["id"]  # type: ignore[index]
        with_parent = await c.call_tool("bead_create", {"title": "x", "parent": bead})
        assert with_parent.is_error and "polecat-1 may create side-work beads" in result_text(with_parent)
        await c.call_tool("bead_claim", {"id": bead})
        retitle = await c.call_tool("bead_update", {"id": bead, "title": "new"})
        assert retitle.is_error and "polecat-1 may change only notes" in result_text(retitle)
        cancel = await c.call_tool("bead_update", {"id": bead, "status": "cancelled"})
        assert cancel.is_error and "polecat-1 may only set status 'blocked'" in result_text(cancel)


async def test_a_removed_agent_stops_working_at_once(connect: Connect, crew: dict[str, Agent], town: Town) -> None:
    from gastown_mcp.town import operator

    async with connect(crew["polecat-1"]) as c:
        assert not (await c.call_tool("bead_ready", {})).is_error
        town.agent_remove(operator(), "polecat-1")
        gone = await c.call_tool("bead_ready", {})
        assert gone.is_error and "polecat-1" in result_text(gone) and "removed" in result_text(gone)
        assert (await c.list_tools()).tools == []
