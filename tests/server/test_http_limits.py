"""The HTTP edge under a hostile agent: a plain bearer challenge, and a cap on each agent's open sessions.

Raw HTTP (httpx2) against a real uvicorn server, as a misbehaving client would send it; the mayor's view
goes through the SDK's own `mcp.Client`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import httpx2
import pytest

from gastown_mcp.config import LimitsSection
from gastown_mcp.models import Agent, Role
from gastown_mcp.server.client import connect_http, serve_http
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def limited(store: Store, town: Town) -> Callable[..., Town]:
    """`limited(sessions_per_agent=3)`: a town on this test's store with those `[limits]`."""

    def make(**limits: float) -> Town:
        return Town(store, town.settings.model_copy(update={"limits": LimitsSection(**limits)}))  # type: ignore[arg-type]

    return make


@pytest.fixture
def agents(add_agent: Callable[..., Agent], credentials: dict[str, Credentials]) -> dict[str, str]:
    add_agent("mayor", Role.mayor)
    add_agent("polecat-1", Role.polecat)
    return {name: c.token for name, c in credentials.items()}


async def open_session(http: httpx2.AsyncClient, url: str, token: str) -> httpx2.Response:
    return await http.post(url, json=INIT, headers=dict(HEADERS, Authorization=f"Bearer {token}"))


async def ping(http: httpx2.AsyncClient, url: str, token: str, session: str) -> int:
    headers = dict(HEADERS, Authorization=f"Bearer {token}", **{"Mcp-Session-Id": session})
    return (await http.post(url, json=PING, headers=headers)).status_code


async def test_a_bad_token_gets_a_plain_bearer_challenge_and_no_oauth_metadata(
    http_url: str, agents: dict[str, str]
) -> None:
    base = http_url.removesuffix("/mcp")
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(10):
            bad = await open_session(http, http_url, "gt_not-a-real-token")
            missing = await http.post(http_url, json=INIT, headers=HEADERS)
            metadata = [
                (await http.get(f"{base}{path}")).status_code
                for path in (
                    "/.well-known/oauth-protected-resource/mcp",
                    "/.well-known/oauth-protected-resource",
                    "/.well-known/oauth-authorization-server",
                    "/.well-known/openid-configuration",
                )
            ]
    challenge = bad.headers["www-authenticate"]
    assert bad.status_code == 401
    assert challenge.startswith('Bearer realm="gastown", error="invalid_token"'), challenge
    assert "resource_metadata" not in challenge and "gastown agent token" in bad.json()["error_description"]
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="gastown"'
    assert metadata == [404, 404, 404, 404]


async def test_one_agent_opening_sessions_in_a_loop_keeps_only_its_cap_and_the_mayor_still_connects(
    limited: Callable[..., Town], agents: dict[str, str]
) -> None:
    town = limited(sessions_per_agent=3)
    polecat = agents["polecat-1"]
    with serve_http(town) as url:
        async with httpx2.AsyncClient() as http:
            with anyio.fail_after(30):
                opened = []
                for _ in range(20):
                    response = await open_session(http, url, polecat)
                    assert response.status_code == 200, response.text
                    opened.append(response.headers["mcp-session-id"])
                alive = [await ping(http, url, polecat, sid) for sid in opened]
            async with connect_http(url, agents["mayor"], mode="legacy") as mayor:
                with anyio.fail_after(10):
                    assert not (await mayor.call_tool("bead_ready", {})).is_error
    # The oldest idle sessions were closed to make room: only the newest three still answer.
    assert alive == [404] * 17 + [200] * 3


async def test_a_new_session_is_refused_with_a_clear_error_when_every_session_of_the_agent_is_busy(
    limited: Callable[..., Town], agents: dict[str, str]
) -> None:
    town = limited(sessions_per_agent=2)
    polecat = agents["polecat-1"]
    with serve_http(town) as url:
        async with httpx2.AsyncClient(timeout=10) as http, AsyncExitStack() as streams:
            with anyio.fail_after(20):
                for _ in range(2):
                    sid = (await open_session(http, url, polecat)).headers["mcp-session-id"]
                    # A GET stream is a request in flight for as long as it is open: the session is busy.
                    get = dict(Accept="text/event-stream", Authorization=f"Bearer {polecat}", **{"Mcp-Session-Id": sid})
                    stream = await streams.enter_async_context(http.stream("GET", url, headers=get))
                    assert stream.status_code == 200
                refused = await open_session(http, url, polecat)
                mayor = await open_session(http, url, agents["mayor"])
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "polecat-1 already has 2 MCP sessions open" in message and "sessions_per_agent" in message
    assert mayor.status_code == 200


async def test_a_session_with_no_request_in_flight_is_closed_after_the_idle_timeout(
    limited: Callable[..., Town], agents: dict[str, str]
) -> None:
    town = limited(session_idle_seconds=0.3)
    polecat = agents["polecat-1"]
    with serve_http(town) as url:
        async with httpx2.AsyncClient() as http:
            with anyio.fail_after(10):
                sid = (await open_session(http, url, polecat)).headers["mcp-session-id"]
                assert await ping(http, url, polecat, sid) == 200
                await anyio.sleep(1.0)  # the SDK's idle timer has no event to wait on; any request would reset it
                assert await ping(http, url, polecat, sid) == 404
