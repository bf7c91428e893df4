"""The HTTP edge in front of `/mcp`: one bearer check per request and a cap on each agent's open sessions.

A bad or missing token gets a plain bearer challenge (no OAuth metadata: the town issues tokens itself, so a
client must report the bad token instead of starting an OAuth flow). A legacy (`initialize`) session costs the
server a task and its memory until it ends, so each agent may keep `sessions_per_agent` of them: at the cap,
its oldest session with no request in flight is closed (as its client's DELETE would) to make room, and when
every one of them is busy the new one is refused. Idle sessions are closed by the SDK after
`session_idle_seconds`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcp.server.auth.provider import AccessToken
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gastown_mcp.server.identity import TownTokenVerifier

REALM = "gastown"
SESSION_HEADER = b"mcp-session-id"
# What a synthetic DELETE carries over from the request that needs room (auth and DNS-rebinding checks).
KEPT_HEADERS = {b"host", b"authorization", b"origin"}


@dataclass
class _Session:
    id: str
    opened: float
    last_active: float
    in_flight: int = 0


@dataclass
class _Agent:
    sessions: dict[str, _Session] = field(default_factory=dict)
    opening: int = 0  # new-session requests being served right now (not yet given an id)


class AgentGate:
    """ASGI wrapper: authenticates every request to the MCP app and caps each agent's open sessions."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: TownTokenVerifier,
        *,
        sessions_per_agent: int,
        path: str = "/mcp",
        clock: Callable[[], float] = time.monotonic,
        quick_lane: ASGIApp | None = None,
        quick_tools: frozenset[str] = frozenset(),
    ) -> None:
        """`quick_lane` serves a 2026-07-28 call of one of `quick_tools` (see `transports.direct_calls`)."""
        self.app = app
        self.quick_lane = quick_lane
        self.quick_tools = quick_tools
        self.path = path
        self.verifier = verifier
        self.cap = sessions_per_agent
        self.clock = clock
        self._agents: dict[str, _Agent] = {}

    def open_sessions(self, agent: str) -> int:
        """The sessions this gate believes `agent` has open (for tests and `doctor`)."""
        return len(self._agents.get(agent, _Agent()).sessions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            # Lifespan (the SDK's session manager starts and stops there), and 404 for every other path.
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        found = self.verifier.check(token) if token else None
        if found is None:
            await _challenge(send, bad_token=token is not None)
            return
        access = found[0]
        with self.verifier.verified(found) as user:
            scope["user"], scope["auth"] = user, AuthCredentials(access.scopes)
            session_id = _header(scope, SESSION_HEADER)
            if session_id is not None:
                await self._use(access.client_id, session_id, scope, receive, send)
            elif _may_open_session(scope):
                await self._open(access, scope, receive, send)
            elif self.quick_lane is not None and self._quick(scope):
                await self.quick_lane(scope, receive, send)
            else:
                await self.app(scope, receive, send)  # the stateless 2026-07-28 era: no session to keep

    def _quick(self, scope: Scope) -> bool:
        """A 2026-07-28 `tools/call` POST (no session) whose routing headers name a quick tool. The SDK checks
        the headers against the body as always: a request whose headers lie is refused, not misrouted."""
        if scope["method"] != "POST" or scope["path"] != self.path:
            return False
        return _header(scope, b"mcp-method") == "tools/call" and _header(scope, b"mcp-name") in self.quick_tools

    async def _open(self, access: AccessToken, scope: Scope, receive: Receive, send: Send) -> None:
        """A request without a session id: it may open a session (legacy `initialize`), so make room first."""
        name = access.client_id
        agent = self._agents.setdefault(name, _Agent())
        while len(agent.sessions) + agent.opening >= self.cap:
            idle = [s for s in agent.sessions.values() if s.in_flight == 0]
            if not idle:
                await _refuse(send, name, self.cap)
                return
            oldest = min(idle, key=lambda s: s.last_active)
            del agent.sessions[oldest.id]
            await self._close(oldest.id, scope)
        agent.opening += 1
        opening = [True]

        async def watch(message: Message) -> None:
            # Known from the moment its id goes out: the client's next request (a GET stream) can arrive
            # before this request's handler returns, and must find the session to count it busy.
            if message["type"] == "http.response.start" and message["status"] < 400:
                sid = _header({"headers": message.get("headers", [])}, SESSION_HEADER)
                if sid is not None:
                    now = self.clock()
                    agent.sessions[sid] = _Session(sid, now, now)
                    if opening:
                        opening.clear()
                        agent.opening -= 1
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if opening:
                agent.opening -= 1

    async def _use(self, name: str, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        agent = self._agents.get(name)
        session = agent.sessions.get(session_id) if agent else None
        if session is not None:
            session.in_flight += 1
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if agent is not None and session is not None:
                session.in_flight -= 1
                session.last_active = self.clock()
                ended = scope["method"] == "DELETE" or (status and status[0] == 404)
                if ended:
                    agent.sessions.pop(session_id, None)

    async def _close(self, session_id: str, scope: Scope) -> None:
        """End a session through the app itself, exactly as its client's DELETE would (the SDK forgets it)."""
        headers = [(k, v) for k, v in scope["headers"] if k in KEPT_HEADERS]
        delete: Scope = {**scope, "method": "DELETE", "query_string": b""}
        delete["headers"] = [*headers, (SESSION_HEADER, session_id.encode("latin-1"))]

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def drop(message: Message) -> None:
            return None

        await self.app(delete, no_body, drop)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _may_open_session(scope: Scope) -> bool:
    """A POST the SDK serves on its session path (an `initialize` handshake era, or no version header)."""
    version = _header(scope, b"mcp-protocol-version")
    return scope["method"] == "POST" and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS)


def _bearer(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer` header; None when there is no such header."""
    value = _header(scope, b"authorization")
    if value is None or not value.lower().startswith("bearer "):
        return None
    return value[7:].strip()


async def _challenge(send: Send, *, bad_token: bool) -> None:
    """401 with a plain RFC 6750 bearer challenge: no `resource_metadata`, so no client starts OAuth."""
    if bad_token:
        text = "unknown or revoked token; get a new one with `gastown agent token NAME`"
        www = f'Bearer realm="{REALM}", error="invalid_token", error_description="{text}"'
        body: dict[str, str] = {"error": "invalid_token", "error_description": text}
    else:
        text = "send `Authorization: Bearer <token>`; `gastown agent token NAME` prints an agent's token"
        www = f'Bearer realm="{REALM}"'
        body = {"error": "invalid_request", "error_description": text}
    await _send_json(send, 401, body, [(b"www-authenticate", www.encode())])


async def _refuse(send: Send, agent: str, cap: int) -> None:
    text = (
        f"{agent} already has {cap} MCP sessions open, each with a request in flight ([limits] "
        "sessions_per_agent); reuse one of them, or end one (DELETE /mcp with its Mcp-Session-Id) and retry"
    )
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": text}}
    await _send_json(send, 429, body, [(b"retry-after", b"5")])


async def _send_json(send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": data})
