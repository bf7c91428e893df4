"""The one way the project serves an ASGI app: uvicorn on a socket bound before the server starts.

Binding first means the URL is known at once and early connections wait in the backlog, so no caller polls
"is it up yet". The server never installs signal handlers: its owner (the town process, a test, a demo)
decides when it stops. `serve_in_thread` is for synchronous callers, `serve` for async ones, `run` for a
process that serves one app until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import uvicorn

from gastown_mcp.errors import Conflict, RuntimeUnavailable


def bind(host: str = "127.0.0.1", port: int = 0, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket (port 0 = any free port), inheritable so uvicorn workers could share it."""
    # IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and without it a kept-alive
    # connection waits ~40 ms per response on Nagle + delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Conflict(f"cannot listen on {host}:{port} ({exc.strerror}); pick another port in town.toml") from exc
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


class Server(uvicorn.Server):
    """uvicorn that leaves signals to its owner and says (`ready`) when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


def make_server(app: Any, *, lifespan: str = "auto", graceful_s: float = 5, log_level: str = "warning") -> Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan=lifespan,  # type: ignore[arg-type]
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(graceful_s),
    )
    return Server(config)


@contextlib.asynccontextmanager
async def serve(app: Any, sock: socket.socket | None = None, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve `app` in the running event loop while the block runs; yields its base URL (`http://host:port`)."""
    sock = sock or bind(host)
    server = make_server(app)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield url_of(sock)
            finally:
                server.should_exit = True
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(
    app: Any, sock: socket.socket | None = None, *, host: str = "127.0.0.1", timeout_s: float = 15
) -> Iterator[str]:
    """Serve `app` from a thread of its own while the block runs; yields its base URL once it listens."""
    sock = sock or bind(host)
    server = make_server(app, lifespan="on", graceful_s=2)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gastown-serve", daemon=True)
    thread.start()
    try:
        if not server.ready.wait(timeout_s) or not server.started:
            raise RuntimeUnavailable(f"the server on {url_of(sock)} did not start within {timeout_s:.0f} s")
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


def run(app: Any, host: str, port: int) -> None:
    """Serve `app` on host:port in this process until interrupted (Ctrl-C)."""
    with contextlib.suppress(KeyboardInterrupt):
        make_server(app).run(sockets=[bind(host, port)])
