"""The caller is resolved from a cache checked against the identity epoch: any change to an agent, made by
any process (here a second `Store` on the same file, as the CLI would be), takes effect on the next call."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx2
from mcp import Client

from gastown_mcp.config import Settings
from gastown_mcp.models import Agent, AgentState
from gastown_mcp.server.client import nudges_in, result_text
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town, operator


def elsewhere(settings: Settings) -> Town:
    """Another process's view of the town (its own connections, its own caches)."""
    return Town(Store(settings), settings)


async def test_a_token_rotated_by_another_process_is_refused_on_its_next_call(
    http_url: str,
    http_connect: Callable[..., AbstractAsyncContextManager[Client]],
    crew: dict[str, Agent],
    credentials: dict[str, Credentials],
    settings: Settings,
) -> None:
    async with http_connect("polecat-1") as c:
        assert not (await c.call_tool("bead_ready", {})).is_error
        assert not (await c.call_tool("bead_ready", {})).is_error  # now served from the cache
        cli = elsewhere(settings)
        fresh = cli.agent_token(operator(), "polecat-1").token
        cli.close()
    async with httpx2.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        old = await http.post(
            http_url,
            json=body,
            headers={"Authorization": f"Bearer {credentials['polecat-1'].token}", "Accept": "application/json"},
        )
    assert old.status_code == 401
    assert fresh != credentials["polecat-1"].token


async def test_an_agent_exited_or_removed_elsewhere_is_refused_at_once_by_a_fixed_identity_server(
    connect: Callable[[Agent], AbstractAsyncContextManager[Client]], crew: dict[str, Agent], settings: Settings
) -> None:
    async with connect(crew["polecat-1"]) as c:
        assert not (await c.call_tool("bead_ready", {})).is_error
        assert not (await c.call_tool("bead_ready", {})).is_error
        cli = elsewhere(settings)
        cli.agent_remove(operator(), "polecat-1")
        cli.close()
        gone = await c.call_tool("bead_ready", {})
        assert gone.is_error and "removed" in result_text(gone)


async def test_a_state_change_and_a_nudge_made_elsewhere_are_seen_on_the_next_call(
    connect: Callable[[Agent], AbstractAsyncContextManager[Client]], crew: dict[str, Agent], settings: Settings
) -> None:
    async with connect(crew["polecat-1"]) as c:
        assert not (await c.call_tool("bead_ready", {})).is_error
        cli = elsewhere(settings)
        cli.set_agent_state(operator(), "polecat-1", AgentState.stalled, "test")
        cli.nudge(operator(), "polecat-1", "carry on")
        cli.close()
        result = await c.call_tool("bead_ready", {})
        assert any("carry on" in line for line in nudges_in(result))
        assert not nudges_in(await c.call_tool("bead_ready", {}))  # delivered once
