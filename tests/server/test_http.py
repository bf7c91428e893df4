"""Streamable HTTP on a real uvicorn server: bearer tokens pick the agent; no or bad token is a 401."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gastown_mcp.models import Agent, Role
from gastown_mcp.server import build_server
from gastown_mcp.server.client import connect_http, nudges_in, result_text
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town, operator, roles

HttpConnect = Callable[..., AbstractAsyncContextManager[Client]]
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize("auth", [None, "Bearer gt_not-a-real-token", "Bearer", "Basic dXNlcjpwYXNz"])
async def test_a_request_without_a_valid_token_gets_401(
    http_url: str, crew: dict[str, Agent], auth: str | None
) -> None:
    headers = dict(HEADERS, **({"Authorization": auth} if auth else {}))
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(10):
            response = await http.post(http_url, json=INIT, headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.headers.get("www-authenticate", "")


async def test_the_mcp_client_cannot_connect_with_a_bad_token(http_url: str, crew: dict[str, Agent]) -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    headers = {"Authorization": "Bearer gt_wrong"}
    async with httpx2.AsyncClient(headers=headers, event_hooks={"response": [record]}) as http:
        # The SDK surfaces a 401 as a generic transport error; the status is what matters.
        with anyio.fail_after(10), pytest.raises(Exception):  # noqa: B017
            async with Client(streamable_http_client(http_url, http_client=http)) as c:
                await c.list_tools()
    assert statuses and set(statuses) == {401}


async def test_a_rotated_token_stops_working(
    http_url: str, crew: dict[str, Agent], credentials: dict[str, Credentials], town: Town
) -> None:
    old = credentials["polecat-1"].token
    new = town.agent_token(operator(), "polecat-1").token
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(10):
            stale = await http.post(http_url, json=INIT, headers=dict(HEADERS, Authorization=f"Bearer {old}"))
            fresh = await http.post(http_url, json=INIT, headers=dict(HEADERS, Authorization=f"Bearer {new}"))
    assert stale.status_code == 401
    assert fresh.status_code == 200


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("role", list(Role))
async def test_each_role_lists_exactly_its_tools_over_http(
    role: Role,
    mode: str,
    http_url: str,
    town: Town,
    add_agent: Callable[..., Agent],
    credentials: dict[str, Credentials],
) -> None:
    agent = add_agent(f"{role.value}-9", role)
    served = {t.name for t in await build_server(town).list_tools()}
    async with connect_http(http_url, credentials[agent.name].token, mode=mode) as c:
        with anyio.fail_after(10):
            listed = [t.name for t in (await c.list_tools()).tools]
    assert sorted(listed) == sorted(set(roles.tools_for(role)) & served)


async def test_a_tool_call_acts_as_the_token_holder(http_connect: HttpConnect, crew: dict[str, Agent]) -> None:
    async with http_connect("mayor") as mayor, http_connect("polecat-1", mode="legacy") as polecat:
        with anyio.fail_after(10):
            bead = (await mayor.call_tool("bead_create", {"title": "Over HTTP"})).structured_content
            assert bead is not None and bead["status"] == "open"
            claimed = await polecat.call_tool("bead_claim", {})
            assert not claimed.is_error, result_text(claimed)
            assert claimed.structured_content["assignee"] == "polecat-1"  # type: ignore[index]
            shown = await mayor.call_tool("bead_show", {"id": bead["id"]})
    assert shown.structured_content["created_by"] == "mayor"  # type: ignore[index]


async def test_a_role_refusal_over_http_is_a_tool_error_naming_the_agent(
    http_connect: HttpConnect, crew: dict[str, Agent]
) -> None:
    async with http_connect("polecat-2") as c:
        with anyio.fail_after(10):
            refused = await c.call_tool("bead_link", {"id": "gt-a", "other": "gt-b"})
            forbidden = await c.call_tool("bead_complete", {"id": "gt-a", "summary": "x"})
            still = await c.call_tool("bead_ready", {})
    assert refused.is_error and result_text(refused) == "polecat-2 (polecat) may not call bead_link"
    assert forbidden.is_error and "no bead 'gt-a'" in result_text(forbidden)
    assert not still.is_error


async def test_a_nudge_over_http_reaches_the_polecat_once(
    http_connect: HttpConnect, crew: dict[str, Agent], store: Store
) -> None:
    async with http_connect("mayor") as mayor, http_connect("polecat-1") as polecat:
        with anyio.fail_after(10):
            assert not (await mayor.call_tool("town_nudge", {"to": "polecat-1", "text": "rebase first"})).is_error
            first = await polecat.call_tool("town_heartbeat", {})
            second = await polecat.call_tool("town_heartbeat", {})
    assert nudges_in(first) == ["NUDGE from mayor (#1): rebase first"]
    assert first.structured_content["pending_nudges"] == 1  # type: ignore[index]  # counted before delivery
    assert nudges_in(second) == []
    assert [m.state.value for m in store.messages.nudges("polecat-1")] == ["delivered"]


async def test_resources_and_prompts_over_http(http_connect: HttpConnect, crew: dict[str, Agent]) -> None:
    async with http_connect("mayor") as mayor, http_connect("polecat-1", mode="legacy") as c:
        with anyio.fail_after(10):
            bead = (await mayor.call_tool("bead_create", {"title": "Res"})).structured_content
            status = (await mayor.read_resource("town://status")).contents[0]
            shown = (await c.read_resource(f"bead://{bead['id']}")).contents[0]  # type: ignore[index]
            with pytest.raises(Exception, match="polecat-1 \\(polecat\\) may not read town://status"):
                await c.read_resource("town://status")
            prompt = await c.get_prompt("polecat")
    assert '"beads_by_status"' in status.text  # type: ignore[union-attr]
    assert '"title": "Res"' in shown.text  # type: ignore[union-attr]
    assert "GUPP" in prompt.messages[0].content.text  # type: ignore[union-attr]


async def test_two_agents_on_one_server_see_their_own_tools(http_connect: HttpConnect, crew: dict[str, Agent]) -> None:
    async with http_connect("dog-1") as dog, http_connect("overseer") as boss:
        with anyio.fail_after(10):
            dog_tools = {t.name for t in (await dog.list_tools()).tools}
            boss_tools = {t.name for t in (await boss.list_tools()).tools}
    assert dog_tools == set(roles.tools_for(Role.dog)) & boss_tools
    assert "bead_create" in boss_tools and "bead_create" not in dog_tools
