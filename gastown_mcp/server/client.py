"""A real MCP client for the town's own HTTP server, and serving that server in a thread.

Demos, tests and benchmarks all talk to the town the way agents do: `serve_http(town)` runs the streamable
HTTP app on an ephemeral loopback port, `connect_http(url, token)` opens an `mcp.Client` with a bearer token.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from gastown_mcp.models import NUDGE_MARK
from gastown_mcp.server import http_app
from gastown_mcp.town import Town


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is listening, so callers wait on an event instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextlib.contextmanager
def serve_http(town: Town, host: str = "127.0.0.1", *, timeout: float = 15.0) -> Iterator[str]:
    """Serve `town` over streamable HTTP on an ephemeral port in a thread; yields the `/mcp` URL."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and without it a
    # kept-alive connection waits ~40 ms per response on Nagle + delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        http_app(town, host, port), log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=2
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gastown-http", daemon=True)
    thread.start()
    try:
        if not server.ready.wait(timeout) or not server.started:
            raise RuntimeError(f"the MCP HTTP server did not start on {host}:{port} within {timeout}s")
        yield f"http://{host}:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


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
