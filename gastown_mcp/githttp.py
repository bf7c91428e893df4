"""Git smart HTTP at `/git/<agent>.git/...` on the town's MCP port: how agents on other machines get their
repository and hand their branch back. A plain ASGI app over `Town.workspace_git`; the agent's own bearer
token (git's `http.extraHeader`, or HTTP basic auth with the token as password) says who is asking.

`with_git(app, town)` puts it in front of the MCP app, so agents need no other port, firewall rule or relay.
"""

from __future__ import annotations

import base64
import gzip
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from gastown_mcp.errors import Forbidden, GastownError, InvalidInput, NotFound, Unauthorized
from gastown_mcp.town import Town

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIX = "/git/"
MAX_BODY_BYTES = 256 * 2**20
_PATH = re.compile(r"^/git/([a-z0-9][a-z0-9_.-]{0,62})\.git/(info/refs|git-upload-pack|git-receive-pack)$")
_STATUS = {Unauthorized: 401, Forbidden: 403, NotFound: 404, InvalidInput: 400}


def with_git(app: ASGIApp, town: Town) -> ASGIApp:
    """`app` with git smart HTTP answered first under /git/."""
    git = git_app(town)

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(PREFIX):
            await git(scope, receive, send)
        else:
            await app(scope, receive, send)

    return route


def _token(headers: dict[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, credential = value.partition(" ")
    if scheme.lower() == "bearer" and credential:
        return credential.strip()
    if scheme.lower() == "basic" and credential:
        try:
            return base64.b64decode(credential).decode().partition(":")[2]
        except ValueError:
            return ""
    return ""


async def _reply(send: Send, status: int, content_type: str, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", content_type.encode()), (b"cache-control", b"no-cache"), *extra]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Receive, gzipped: bool) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidInput(f"the request is larger than {MAX_BODY_BYTES // 2**20} MiB; push smaller commits")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    data = b"".join(chunks)
    return gzip.decompress(data) if gzipped else data


def git_app(town: Town) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            match = _PATH.match(str(scope.get("path", "")))
            if match is None:
                raise NotFound("no such git path: use /git/<agent>.git (the URL in GASTOWN_GIT_URL)")
            agent_name, tail = match.group(1), match.group(2)
            token = _token(headers)
            if not token:
                raise Unauthorized("send the agent's token: `Authorization: Bearer <token>`")
            actor = await anyio.to_thread.run_sync(town.authenticate, token)
            if tail == "info/refs":
                if scope.get("method") != "GET":
                    raise InvalidInput("info/refs is read with GET")
                service = dict(p.partition("=")[::2] for p in query.split("&") if p).get("service", "")
                body = None
            else:
                if scope.get("method") != "POST":
                    raise InvalidInput(f"{tail} takes a POST")
                service = tail
                body = await _body(receive, headers.get("content-encoding", "") == "gzip")
            reply = await anyio.to_thread.run_sync(lambda: town.workspace_git(actor, agent_name, service, body))
            await _reply(send, 200, reply.content_type, reply.body, [])
        except GastownError as exc:
            status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
            challenge = [(b"www-authenticate", b'Basic realm="gastown"')] if status == 401 else []
            await _reply(send, status, "text/plain; charset=utf-8", f"{exc}\n".encode(), challenge)

    return app
