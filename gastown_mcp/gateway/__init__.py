"""The LLM gateway: an Anthropic-Messages-compatible proxy with per-agent keys, metering and budgets.

`build_gateway(town, provider_env)` returns the Starlette app the town serves on its own port. It meters and
enforces budgets through the town's one `Budgets` and picks upstreams through its one `Routes`, configured by
`[gateway]` (`config.GatewaySection`). Provider keys arrive once, from the edge, in `provider_env`; agents
only ever hold their virtual key. Each app is one gateway instance with an id of its own: it owns the budget
reservations it makes, and on start charges in full every reservation a previous (dead) instance left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gastown_mcp.config import GatewayConfig, RouteRule, Upstream
from gastown_mcp.gateway.app import JournalSyncer, MessagesProxy
from gastown_mcp.town import Town
from gastown_mcp.town.budgets import UsageRow

__all__ = ["GatewayConfig", "RouteRule", "Upstream", "build_gateway", "upstream_keys"]


_PROXIED = frozenset({"/v1/messages", "/v1/messages/count_tokens"})


class _Gateway(Starlette):
    """The Starlette app, except that model requests go straight to the proxy (raw ASGI, which answers its own
    errors) without passing every message of a response through Starlette's routing and middleware."""

    def __init__(self, proxy: MessagesProxy, **kw: Any) -> None:
        super().__init__(**kw)
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in _PROXIED:
            await self.proxy(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def upstream_keys(config: GatewayConfig, provider_env: Mapping[str, str]) -> dict[str, str]:
    """Upstream name → its provider key, for the upstreams whose key the edge found (`Upstream.key_ref`)."""
    return {
        name: provider_env[u.key_ref]
        for name, u in config.upstreams.items()
        if u.key_ref is not None and provider_env.get(u.key_ref)
    }


def build_gateway(
    town: Town,
    provider_env: Mapping[str, str],
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    on_settled: Callable[[UsageRow], None] | None = None,
) -> Starlette:
    """The gateway app. `provider_env` maps variable names (an upstream's `key_env`) to provider keys;
    `on_settled` is called (in the event loop) with each usage row once written."""
    log = logging.getLogger("gastown_mcp.gateway")
    config, budgets = town.settings.gateway, town.budgets
    keys = upstream_keys(config, provider_env)
    for name, u in config.upstreams.items():
        if u.key_ref is not None and name not in keys:
            log.warning("gateway upstream %s has no key: %s is not set", name, u.key_ref)
    timeout = httpx2.Timeout(
        connect=config.connect_timeout_seconds, read=config.read_timeout_seconds, write=60.0, pool=60.0
    )
    client = httpx2.AsyncClient(
        timeout=timeout,
        limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30.0),
        transport=transport,
        trust_env=False,
    )
    instance = f"gw-{os.getpid()}-{secrets.token_hex(6)}"
    proxy = MessagesProxy(town, config, keys, client, log, on_settled, instance)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The town process is the only gateway: a reservation this instance did not make was made by one that
        # died mid-request (SIGKILL, OOM, power loss), perhaps after its client had the whole response. Its usage
        # was never recorded, so it is charged in full (a usage row, outcome `abandoned`, saying so).
        charged = budgets.settle_leftovers(instance)
        if charged:
            log.warning(
                "gateway charged %d requests a previous gateway left unsettled in full (%d tokens)",
                len(charged), sum(row.tokens for row in charged),
            )  # fmt: skip
        syncer = JournalSyncer(budgets.sync, log, checkpoint=budgets.checkpoint)
        budgets.autocheckpoint(False)  # this (the loop's) connection: the syncer checkpoints in its stead
        syncer.start()
        try:
            yield
        finally:
            await client.aclose()
            await anyio.to_thread.run_sync(syncer.stop)
            budgets.autocheckpoint(True)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "upstreams": sorted(config.upstreams)})

    app = _Gateway(
        proxy,
        routes=[
            Route("/v1/messages", proxy, methods=["POST"]),
            Route("/v1/messages/count_tokens", proxy, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.budgets = budgets
    app.state.instance = instance
    return app
