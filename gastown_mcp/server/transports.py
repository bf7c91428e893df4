"""How the server is reached: stdio as one fixed agent, or streamable HTTP at /mcp with a bearer token per
request (behind DNS-rebinding protection limited to the hosts the town is served on, CORS for the browser
origins it allows, and the `gate` that checks the token once and caps each agent's open sessions).
"""

from __future__ import annotations

import re
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import RequestBodyLimitMiddleware, TransportSecuritySettings
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gastown_mcp.models import Agent
from gastown_mcp.server.build import build_server
from gastown_mcp.server.calls import QUICK_TOOLS, Bodies, ToolThreads
from gastown_mcp.server.gate import AgentGate
from gastown_mcp.server.identity import TownTokenVerifier
from gastown_mcp.town import Town

# A page on this machine may use the server (it still needs an agent's token); a page anywhere else may not,
# unless `[server] allowed_origins` lists it. DNS rebinding sends the attacker's own origin, never these.
LOOPBACK_ORIGINS = tuple(
    f"{scheme}://{host}{port}"
    for scheme in ("http", "https")
    for host in ("127.0.0.1", "localhost", "[::1]")
    for port in ("", ":*")
)
# What a browser client sends and must read: the bearer token, the session and protocol headers.
EXPOSED_HEADERS = ["Mcp-Session-Id", "Mcp-Protocol-Version", "WWW-Authenticate"]


def run_stdio(town: Town, agent: Agent) -> None:
    """Serve MCP over stdin/stdout as `agent` (a local, trusted process)."""
    build_server(town, agent).run("stdio")


def allowed_origins(hosts: list[str], configured: list[str]) -> list[str]:
    """Loopback, the server's own origins (each allowed Host over http and https), and the configured ones."""
    own = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return list(dict.fromkeys([*LOOPBACK_ORIGINS, *own, *(o.rstrip("/") for o in configured)]))


def _origin_pattern(origins: list[str]) -> str:
    """The regular expression CORS matches origins with: exact ones, and `scheme://host:*` for any port."""
    parts = [re.escape(o[:-2]) + r"(:\d+)?" if o.endswith(":*") else re.escape(o) for o in origins]
    return "|".join(parts)


def http_app(town: Town, host: str, port: int, allowed_hosts: list[str] | None = None) -> Any:
    """The ASGI app serving streamable HTTP at /mcp, bearer token per request, `[limits]` sessions per agent."""
    verifier = TownTokenVerifier(town)
    bodies = Bodies(town, ToolThreads())
    server = build_server(town, verifier=verifier, bodies=bodies)
    hosts = [f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", *(allowed_hosts or [])]
    origins = allowed_origins(hosts, town.settings.server.allowed_origins)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    limits = town.settings.limits
    app = server.streamable_http_app(
        transport_security=security, host=host, session_idle_timeout=limits.session_idle_seconds
    )
    gated = AgentGate(
        app,
        verifier,
        sessions_per_agent=limits.sessions_per_agent,
        quick_lane=direct_calls(town, server, bodies, verifier, security),
        quick_tools=QUICK_TOOLS,
    )
    # Outside the gate: a browser's preflight carries no token. A foreign origin gets no CORS headers (its
    # preflight a 400), and the transport's own check refuses its requests with 403.
    return CORSMiddleware(
        gated,
        allow_origin_regex=_origin_pattern(origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )


def quick_lane(server: MCPServer) -> ASGIApp | None:
    """The SDK's own 2026-07-28 request handler for quick tool calls, answering in JSON mode: the same reply,
    byte for byte, as its default mode gives a call that finishes without a notification (it then answers
    JSON as well), without the task group, memory stream and timer that stand by to switch the reply to an
    event stream, nor the routing layers in front of it. The body-size limit is the SDK's.

    The handler is not part of the SDK's public API: with an SDK that lacks it (or the session manager's
    lifespan state), this is None and every call takes the default path, as before."""
    try:
        from mcp.server._streamable_http_modern import handle_modern_request
    except ImportError:
        return None
    manager = server.session_manager
    if not hasattr(manager, "_lifespan_state"):
        return None

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        # Lifespan state: the session manager's (entered once at start-up, as for every request it serves).
        state = manager._lifespan_state
        await handle_modern_request(manager.app, manager.security_settings, True, state, scope, receive, send)

    return RequestBodyLimitMiddleware(lane, manager.max_request_body_size)


def direct_calls(
    town: Town, server: MCPServer, bodies: Bodies, verifier: TownTokenVerifier, security: TransportSecuritySettings
) -> ASGIApp | None:
    """The quick calls' app: `direct.DirectCalls` in front of the SDK's handler (`quick_lane`); None (every call
    the default path) where that handler or the SDK's server-info stamp is missing."""
    lane = quick_lane(server)
    stamp = getattr(server.session_manager.app, "server_info_stamp", None)
    if lane is None or not isinstance(stamp, dict):
        return lane
    from gastown_mcp.server.direct import DirectCalls

    limit = server.session_manager.max_request_body_size
    return DirectCalls(town, bodies, verifier, security, lane, max_body=limit, server_info=stamp)


def run_http(town: Town, host: str, port: int) -> None:
    """Serve MCP over streamable HTTP at http://host:port/mcp until interrupted."""
    from gastown_mcp import serving

    serving.run(http_app(town, host, port, town.settings.server.allowed_hosts), host, port)
