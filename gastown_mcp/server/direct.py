"""Direct answers to the two hottest calls: a 2026-07-28 `tools/call` of `bead_claim` or `bead_complete` in the
form MCP clients send it is answered here, without the SDK's per-request pipeline (envelope models, the inbound
ladder, the middleware chain, the tool manager, argument and result models), which cost more than the call's own
work. The reply is the SDK's, byte for byte (a test holds both paths to it, answers and tool errors alike).

Only the plain form is taken: the routing headers once each and agreeing with the body, a JSON body of exactly
`jsonrpc`, `id`, `method`, `params` (`name`, `arguments`, `_meta` with the protocol version, the client's
capabilities and, optionally, its info), arguments of the tool's own names and types within its limits, a Host
and Origin the transport allows, a caller with no nudge waiting, no tracing, and a role that may call the tool.
Everything else (bad input of any kind, a nudge to deliver, a span to record) goes to the SDK's handler with the
body replayed, so its answers and refusals stay exactly its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gastown_mcp.errors import GastownError
from gastown_mcp.models import Agent
from gastown_mcp.server.calls import Bodies
from gastown_mcp.server.identity import TownTokenVerifier
from gastown_mcp.server.views import change_line, change_of
from gastown_mcp.town import Town, roles

log = logging.getLogger(__name__)
ENVELOPE = frozenset({"jsonrpc", "id", "method", "params"})
META_REQUIRED = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY})
META_ALLOWED = META_REQUIRED | {CLIENT_INFO_META_KEY}
ROUTING = frozenset({b"mcp-protocol-version", b"mcp-method", b"mcp-name"})


@dataclass(frozen=True)
class Shape:
    """A tool's arguments: the required and optional names, each with its longest string (None allowed where
    the tool's parameter is optional and nullable)."""

    required: frozenset[str]
    limits: dict[str, int]
    nullable: frozenset[str] = frozenset()

    def fits(self, arguments: dict[str, Any]) -> bool:
        if not self.required <= arguments.keys() <= self.limits.keys():
            return False
        for key, value in arguments.items():
            if value is None and key in self.nullable:
                continue
            if type(value) is not str or len(value) > self.limits[key]:
                return False
        return True


# The parameters of `beads.register`'s two tools (kept in step by the byte-for-byte test, which sends each limit).
SHAPES = {
    "bead_claim": Shape(frozenset(), {"id": 200}),
    "bead_complete": Shape(
        frozenset({"id", "summary"}),
        {"id": 200, "summary": 20000, "branch": 300, "commit": 100},
        frozenset({"branch", "commit"}),
    ),
}


class DirectCalls:
    """ASGI app for the gate's quick calls: answers the plain form itself, hands the rest to `fallback`."""

    def __init__(
        self,
        town: Town,
        bodies: Bodies,
        verifier: TownTokenVerifier,
        security: TransportSecuritySettings,
        fallback: ASGIApp,
        *,
        max_body: int,
        server_info: dict[str, str],
    ) -> None:
        self.town = town
        self.bodies = bodies
        self.verifier = verifier
        self.fallback = fallback
        self.max_body = max_body
        self.hosts = frozenset(security.allowed_hosts) if security.enable_dns_rebinding_protection else None
        self.origins = frozenset(security.allowed_origins)
        self.server_info = server_info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self._plain_headers(scope)
        if name is None:
            await self.fallback(scope, receive, send)
            return
        messages, raw = await _read(receive, self.max_body)
        call = self._plain_body(raw, name) if raw is not None else None
        caller = self.verifier.caller() if call is not None else None
        if (
            call is None
            or caller is None
            or caller.nudged
            or self.town.traces is not None
            or name not in roles.tool_set(caller.agent.role)
        ):
            await self.fallback(scope, _replay(messages, receive), send)
            return
        agent = caller.agent
        request_id, arguments = call
        try:
            brief = await self.bodies.run(_body(self.town, name, arguments), agent, quick=True)
        except Exception as exc:  # as the SDK words a failed tool: a tool error, not a protocol error
            if isinstance(exc, GastownError):
                log.info("Tool %r failed: %r", name, str(exc))
                text = f"Error executing tool {name}: {exc}"
            else:  # a crash: its own text stays in the server's log
                log.exception("Tool %r raised an unexpected exception", name)
                text = f"Error executing tool {name}"
            result: dict[str, Any] = {
                "content": [{"text": text, "type": "text"}],
                "isError": True,
                "resultType": "complete",
            }
        else:
            data = change_of(brief)
            result = {
                "content": [{"text": change_line(data), "type": "text"}],
                "isError": False,
                "resultType": "complete",
                "structuredContent": data,
            }
        result["_meta"] = {"io.modelcontextprotocol/serverInfo": self.server_info}
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}, separators=(",", ":")).encode()
        # What starlette's `Response(body, media_type="application/json")` sends, without building one.
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _plain_headers(self, scope: Scope) -> str | None:
        """The tool's name if the headers are the plain form's (one of each routing header, JSON content and
        accept, a Host and Origin the transport allows, no other `mcp-` header); else None."""
        seen: dict[bytes, bytes] = {}
        content_type = accept = host = origin = None
        for key, value in scope["headers"]:
            if key.startswith(b"mcp-"):
                if key not in ROUTING or key in seen:
                    return None
                seen[key] = value
            elif key == b"content-type":
                content_type = value
            elif key == b"accept":
                accept = value
            elif key == b"host":
                host = value
            elif key == b"origin":
                origin = value
        if len(seen) != len(ROUTING) or seen[b"mcp-method"] != b"tools/call" or content_type != b"application/json":
            return None
        if seen[b"mcp-protocol-version"].decode("latin-1") not in MODERN_PROTOCOL_VERSIONS:
            return None
        if accept is None or b"application/json" not in [t.split(b";")[0].strip() for t in accept.split(b",")]:
            return None
        if self.hosts is not None:
            if host is None or host.decode("latin-1") not in self.hosts:
                return None
            if origin is not None and origin.decode("latin-1") not in self.origins:
                return None
        name = seen[b"mcp-name"].decode("latin-1")
        return name if name in SHAPES else None

    def _plain_body(self, raw: bytes, name: str) -> tuple[int | str, dict[str, Any]] | None:
        """(request id, arguments) if the body is the plain form of a call of `name`; else None."""
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if type(body) is not dict or body.keys() != ENVELOPE or body["jsonrpc"] != "2.0":
            return None
        request_id, params = body["id"], body["params"]
        if type(request_id) not in (int, str) or body["method"] != "tools/call" or type(params) is not dict:
            return None
        if not params.keys() <= {"name", "arguments", "_meta"} or params.get("name") != name:
            return None
        meta, arguments = params.get("_meta"), params.get("arguments", {})
        if type(meta) is not dict or not META_REQUIRED <= meta.keys() <= META_ALLOWED:
            return None
        if meta[PROTOCOL_VERSION_META_KEY] not in MODERN_PROTOCOL_VERSIONS:
            return None
        if type(arguments) is not dict or not SHAPES[name].fits(arguments):
            return None
        return request_id, arguments


def _body(town: Town, name: str, arguments: dict[str, Any]) -> Callable[[Agent], Any]:
    """The tool's body as `beads.register` runs it (the same `Town` call with the same arguments)."""
    if name == "bead_claim":
        bead_id = arguments.get("id", "")
        return lambda agent: town.bead_claim_brief(agent, bead_id)
    bead, summary = arguments["id"], arguments["summary"]
    branch, commit = arguments.get("branch"), arguments.get("commit")
    return lambda agent: town.bead_complete_brief(agent, bead, summary, branch, commit)


async def _read(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The messages read and the whole body, or None as the body if it is over `limit` or the client left (then
    reading stops there)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives the messages already read again, in order, then the request's own."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
