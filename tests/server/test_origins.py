"""Browser clients over HTTP: loopback and the server's own origin are allowed (with CORS headers), an origin
listed in `[server] allowed_origins` too, and any other origin is refused."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx2
import pytest

from gastown_mcp.config import ServerSection, Settings
from gastown_mcp.models import Agent
from gastown_mcp.server.client import serve_http
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town, operator

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def _post(url: str, token: str, origin: str) -> httpx2.Response:
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "Origin": origin}
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(10):
            return await http.post(url, json=INIT, headers=headers)


async def _preflight(url: str, origin: str) -> httpx2.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
    }
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(10):
            return await http.options(url, headers=headers)


def _own_origin(url: str) -> str:
    return url.removesuffix("/mcp")


@pytest.mark.parametrize("origin", ["own", "http://localhost:6274", "http://[::1]:3000"])
async def test_a_same_origin_or_loopback_browser_client_is_served_with_cors_headers(
    town: Town, add_agent: Callable[..., Agent], credentials: dict[str, Credentials], origin: str
) -> None:
    add_agent("mayor", "mayor")
    with serve_http(town) as url:
        origin = _own_origin(url) if origin == "own" else origin
        preflight = await _preflight(url, origin)
        response = await _post(url, credentials["mayor"].token, origin)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert "mcp-session-id" in response.headers["access-control-expose-headers"].lower()


async def test_a_foreign_origin_is_refused_even_with_a_valid_token(
    town: Town, add_agent: Callable[..., Agent], credentials: dict
) -> None:
    add_agent("mayor", "mayor")
    with serve_http(town) as url:
        preflight = await _preflight(url, "http://evil.invalid")
        response = await _post(url, credentials["mayor"].token, "http://evil.invalid")
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


async def test_an_origin_listed_in_the_settings_is_allowed_and_others_still_refused(
    store: Store, settings: Settings
) -> None:
    configured = settings.model_copy(
        update={"server": ServerSection(allowed_origins=["https://board.invalid", "http://tools.invalid:*"])}
    )
    town = Town(store, configured)
    token = town.agent_add(operator(), "mayor", "mayor", None).token
    with serve_http(town) as url:
        listed = await _post(url, token, "https://board.invalid")
        any_port = await _post(url, token, "http://tools.invalid:8080")
        other = await _post(url, token, "https://elsewhere.invalid")
    assert (listed.status_code, listed.headers.get("access-control-allow-origin")) == (
        200,
        "https://board.invalid",
    )
    assert any_port.status_code == 200
    assert other.status_code == 403
