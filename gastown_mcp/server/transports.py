"""How the server is reached: stdio as one fixed agent, or streamable HTTP at /mcp with a bearer token per
request (behind DNS-rebinding protection limited to the hosts the town is served on, and the `gate` that
checks the token once and caps each agent's open sessions).
"""

from __future__ import annotations

from typing import Any

from mcp.server.transport_security import TransportSecuritySettings

from gastown_mcp.models import Agent
from gastown_mcp.server.build import build_server
from gastown_mcp.server.gate import AgentGate
from gastown_mcp.server.identity import TownTokenVerifier
from gastown_mcp.town import Town


def run_stdio(town: Town, agent: Agent) -> None:
    """Serve MCP over stdin/stdout as `agent` (a local, trusted process)."""
    build_server(town, agent).run("stdio")


def http_app(town: Town, host: str, port: int, allowed_hosts: list[str] | None = None) -> Any:
    """The ASGI app serving streamable HTTP at /mcp, bearer token per request, `[limits]` sessions per agent."""
    url = f"http://{host}:{port}"
    verifier = TownTokenVerifier(town)
    server = build_server(town, http_url=url, verifier=verifier)
    hosts = [f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", *(allowed_hosts or [])]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts)
    limits = town.settings.limits
    app = server.streamable_http_app(
        transport_security=security, host=host, session_idle_timeout=limits.session_idle_seconds
    )
    return AgentGate(app, verifier, sessions_per_agent=limits.sessions_per_agent)


def run_http(town: Town, host: str, port: int) -> None:
    """Serve MCP over streamable HTTP at http://host:port/mcp until interrupted."""
    from gastown_mcp import serving

    serving.run(http_app(town, host, port, town.settings.server.allowed_hosts), host, port)
