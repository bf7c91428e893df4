"""A pass-through HTTP proxy that adds an agent's bearer token to every request that has none.

The official MCP conformance suite cannot send an `Authorization` header; the town refuses every request
without one. Everything else (Host, Origin, the body, streamed responses) passes through unchanged, so the
suite's own header checks still reach the server.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx2

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade"}


class TokenProxy:
    """ASGI app forwarding to `upstream` (scheme://host:port) with `Authorization: Bearer <token>` added."""

    def __init__(self, upstream: str, token: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        if not any(k.lower() == b"authorization" for k, _ in headers):
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
        path = scope["raw_path"].decode() + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(60.0, read=None)) as client:
            request = client.build_request(scope["method"], self.upstream + path, headers=headers, content=body)
            response = await client.send(request, stream=True)
            try:
                async with anyio.create_task_group() as tg:

                    async def until_disconnect() -> None:
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        tg.cancel_scope.cancel()

                    tg.start_soon(until_disconnect)
                    out = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
                    await send({"type": "http.response.start", "status": response.status_code, "headers": out})
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
                    tg.cancel_scope.cancel()
            finally:
                await response.aclose()
