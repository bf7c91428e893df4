"""The gateway's request path: virtual key → agent, route, reserve, forward, stream back, meter, settle.

Raw ASGI so bytes go out the moment they arrive and a client hang-up is seen (uvicorn's `send` is silent
after a disconnect, so a watcher task reads `receive`). Every usage row is settled before the client sees
the end of its response, so "the response finished" implies "it was metered".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from starlette.types import Message, Receive, Scope, Send

from gastown_mcp.config import GatewayConfig, Upstream
from gastown_mcp.errors import BudgetBusy, BudgetExceeded, Unauthorized
from gastown_mcp.gateway.meter import Meter
from gastown_mcp.gateway.wire import error_body, forward_headers, response_headers
from gastown_mcp.models import Agent
from gastown_mcp.town import Town
from gastown_mcp.town.budgets import Reservation, Usage, UsageRow


@dataclass(frozen=True)
class Admitted:
    agent: Agent
    upstream_name: str
    reservation: Reservation | None


class Refusal(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message
        self.headers = dict(headers or {})


class MessagesProxy:
    """ASGI app for `/v1/messages` and `/v1/messages/count_tokens`."""

    def __init__(
        self,
        town: Town,
        config: GatewayConfig,
        keys: Mapping[str, str],
        client: httpx2.AsyncClient,
        log: logging.Logger,
        on_settled: Callable[[UsageRow], None] | None = None,
    ) -> None:
        self.town, self.config = town, config
        self.budgets, self.routes = town.budgets, town.routes
        self.keys = dict(keys)  # upstream name → provider key; never logged, never sent to a client
        self.client = client
        self.log = log
        self.on_settled = on_settled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metered = scope["path"].rstrip("/") == "/v1/messages"
        try:
            body = await _read_body(receive, self.config.max_body_bytes)
            key = _virtual_key(scope)
            model, max_tokens, stream = _peek(body)
            admitted = await anyio.to_thread.run_sync(self._admit, key, model, len(body), max_tokens, metered)
        except Refusal as r:
            await _send_error(send, r.status, r.error_type, r.message, r.headers)
            return
        upstream = self.config.upstreams[admitted.upstream_name]
        request = self.client.build_request(
            "POST",
            _url(upstream, scope),
            headers=self._upstream_headers(scope, upstream, admitted.upstream_name),
            content=body,
        )
        meter = Meter(model=model)
        status, outcome = 502, "error"
        try:
            status, outcome = await self._relay(request, receive, send, meter, stream)
        finally:
            with anyio.CancelScope(shield=True):
                await self._settle(admitted, meter, model, status, outcome, stream, started)

    # -- steps -------------------------------------------------------------------------------------
    def _admit(self, key: str | None, model: str, body_len: int, max_tokens: int, metered: bool) -> Admitted:
        """In a worker thread: authenticate, route, and reserve (the DB work before forwarding)."""
        if not key:
            raise Refusal(401, "authentication_error", "no gateway key: send it as x-api-key or Bearer")
        try:
            agent = self.town.gateway_agent(key)
        except Unauthorized:
            raise Refusal(401, "authentication_error", "unknown or revoked gateway key") from None
        name = self.routes.pick(agent.name, model)
        if name is None or name not in self.config.upstreams:
            raise Refusal(500, "api_error", f"gateway route for {agent.name}/{model} names unknown upstream {name!r}")
        if not metered:
            return Admitted(agent, name, None)
        estimate = self.budgets.prices.estimate(model, body_len, max_tokens)
        try:
            res = self.budgets.reserve(agent.name, agent.rig, model, estimate)
        except BudgetBusy as exc:
            retry = str(self.config.busy_retry_after_seconds)
            raise Refusal(429, "rate_limit_error", str(exc), {"retry-after": retry}) from exc
        except BudgetExceeded as exc:
            self.budgets.refused(agent.name, agent.rig, model, self.config.exhausted_status)
            self.log.warning("gateway refused %s: budget exhausted", agent.name)
            raise Refusal(
                self.config.exhausted_status, _error_type(self.config.exhausted_status), f"gastown: {exc}"
            ) from exc
        return Admitted(agent, name, res)

    def _upstream_headers(self, scope: Scope, upstream: Upstream, name: str) -> list[tuple[bytes, bytes]]:
        headers = forward_headers(scope["headers"])
        key = self.keys.get(name)
        if key:
            if upstream.auth == "bearer":
                headers.append((b"authorization", b"Bearer " + key.encode()))
            else:
                headers.append((b"x-api-key", key.encode()))
        return headers

    async def _relay(
        self, request: httpx2.Request, receive: Receive, send: Send, meter: Meter, stream: bool
    ) -> tuple[int, str]:
        """Forward and copy the answer back; returns (status, outcome) for the usage row."""
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            msg = f"gateway could not reach the upstream model server ({type(exc).__name__})"
            await _send_error(send, 502, "api_error", msg)
            return 502, "error"
        status = response.status_code
        try:
            is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
            if not is_sse:
                data = _redact(await response.aread(), self.keys.values())
                if 200 <= status < 300:
                    meter.read_json(data)
                await send(_start(status, response_headers(response.headers.raw, len(data))))
                await send({"type": "http.response.body", "body": data, "more_body": False})
                return status, "ok" if 200 <= status < 300 else "error"
            await send(_start(status, response_headers(response.headers.raw, None)))
            gone = await _pump(response, receive, send, meter)
            if gone:
                return status, "abandoned"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status, "ok" if meter.finished else "abandoned"
        except httpx2.HTTPError:
            return status, "abandoned"  # upstream broke mid-stream: meter what passed
        finally:
            await response.aclose()

    async def _settle(
        self, admitted: Admitted, meter: Meter, model: str, status: int, outcome: str, stream: bool, started: float
    ) -> None:
        reservation = admitted.reservation
        if reservation is None:
            return
        usage = meter.usage() if 200 <= status < 300 else Usage()
        ms = (time.perf_counter() - started) * 1000
        row = await anyio.to_thread.run_sync(
            lambda: self.budgets.settle(
                reservation,
                usage,
                model=meter.model or model,
                upstream=admitted.upstream_name,
                status=status,
                outcome=outcome,
                duration_ms=ms,
                stream=stream,
            )
        )
        self.log.info(
            "gateway %s %s %s %s in=%d out=%d cw=%d cr=%d $%.6f %.1fms",
            admitted.agent.name, row.model, status, outcome, row.input_tokens, row.output_tokens,
            row.cache_creation_tokens, row.cache_read_tokens, row.cost_usd, ms,
        )  # fmt: skip
        if self.on_settled is not None:
            self.on_settled(row)


async def _pump(response: httpx2.Response, receive: Receive, send: Send, meter: Meter) -> bool:
    """Copy SSE bytes through as they come; True if the client hung up first."""
    gone = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        async for chunk in response.aiter_raw():
            meter.feed(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        tg.cancel_scope.cancel()
    return gone


def _error_type(status: int) -> str:
    return {402: "billing_error", 403: "permission_error"}.get(status, "invalid_request_error")


def _url(upstream: Upstream, scope: Scope) -> str:
    query = scope.get("query_string", b"").decode()
    return upstream.base_url.rstrip("/") + scope["path"] + (f"?{query}" if query else "")


def _virtual_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return value.decode("latin-1").strip() or None
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip() or None
    return None


def _peek(body: bytes) -> tuple[str, int, bool]:
    import json

    try:
        data = json.loads(body)
    except ValueError as exc:
        raise Refusal(400, "invalid_request_error", "request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise Refusal(400, "invalid_request_error", "request body must be a JSON object")
    max_tokens = data.get("max_tokens")
    return str(data.get("model", "")), max_tokens if isinstance(max_tokens, int) else 0, bool(data.get("stream"))


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(499, "api_error", "client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, "request_too_large", f"request body over the gateway's {limit} byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _redact(data: bytes, keys: Any) -> bytes:
    for key in keys:
        if key and key.encode() in data:
            data = data.replace(key.encode(), b"[redacted]")
    return data


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _send_error(
    send: Send, status: int, error_type: str, message: str, extra: Mapping[str, str] | None = None
) -> None:
    body = error_body(error_type, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send(_start(status, headers))
    await send({"type": "http.response.body", "body": body, "more_body": False})
