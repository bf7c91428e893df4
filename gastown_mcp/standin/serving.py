"""Serve an ASGI app with uvicorn inside the running event loop, on a socket bound before it starts.

Binding first means the URL is known at once and early connections wait in the backlog: tests and the
demo need no polling for "is it up yet".
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import uvicorn


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket (port 0 = any free port), for apps that must know their port when built."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve(
    app: Any, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    """Yield the base URL (`http://host:port`) while `app` is being served; stop it on exit."""
    sock = sock or bind(host, port)
    host, bound = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", access_log=False, server_header=False)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://{host}:{bound}"
            finally:
                server.should_exit = True
    finally:
        sock.close()
