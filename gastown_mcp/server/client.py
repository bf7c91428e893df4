"""A real MCP client for the town's own HTTP server, and serving that server in a thread.

Demos, tests and benchmarks all talk to the town the way agents do: `serve_http(town)` runs the streamable
HTTP app on an ephemeral loopback port, `connect_http(url, token)` opens an `mcp.Client` with a bearer token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from gastown_mcp import serving
from gastown_mcp.models import NUDGE_MARK
from gastown_mcp.server import http_app
from gastown_mcp.town import Town


@contextlib.contextmanager
def serve_http(town: Town, host: str = "127.0.0.1", *, timeout: float = 15.0) -> Iterator[str]:
    """Serve `town` over streamable HTTP on an ephemeral port in a thread; yields the `/mcp` URL."""
    sock = serving.bind(host)
    app = http_app(town, host, sock.getsockname()[1])
    with serving.serve_in_thread(app, sock, timeout_s=timeout) as url:
        yield f"{url}/mcp"


@contextlib.asynccontextmanager
async def connect_http(url: str, token: str | None, *, mode: str = "auto") -> AsyncIterator[Client]:
    """A real MCP client over streamable HTTP, sending `token` as the bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def result_text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def nudges_in(result: CallToolResult) -> list[str]:
    """The nudge lines the server appended to a tool result."""
    return [c.text for c in result.content if isinstance(c, TextContent) and c.text.startswith(NUDGE_MARK)]
