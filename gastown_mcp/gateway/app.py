"""The gateway's request path: virtual key → agent, body (bounded, vetted), route, reserve, forward, stream
back, meter, settle.

Raw ASGI so the key is checked before a byte of body is read, bytes go out the moment they arrive, and a client
hang-up is seen (uvicorn's `send` is silent after a disconnect, so a watcher task reads `receive`). Reads
(key, stop switch, route) run on the event loop, and so do the two writes when the write lock is free at once
(a worker thread takes them when it is not): a thread hand-off costs more than the write. The reservation is
written before forwarding and fails closed (a store that cannot record it gets a 503, nothing is forwarded).
The usage row is written before the client sees the end of its response (a JSON body, a stream's
`message_stop`) and fails closed too (a 503, or an SSE `error` event in place of `message_stop`); a stream's
content goes out as it comes, so a client may hold the whole text before the row. A reservation left by a
gateway that died in between is charged in full by the next one's start, so a response a client received is
always metered. Writes are committed (durable against a crash) before they count; the journal's fdatasync
(durable against power loss) follows within `SYNC_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio
import httpx2
from starlette.types import Message, Receive, Scope, Send

from gastown_mcp.config import GatewayConfig, Upstream
from gastown_mcp.errors import BudgetBusy, BudgetExceeded, StoreError, Unauthorized
from gastown_mcp.gateway.meter import Meter
from gastown_mcp.gateway.policy import Checked, check
from gastown_mcp.gateway.wire import (
    Refusal,
    StreamRedactor,
    error_body,
    forward_headers,
    redact,
    response_headers,
    sse_error,
)
from gastown_mcp.models import Agent
from gastown_mcp.town import Town
from gastown_mcp.town.budgets import Estimate, Reservation, Usage, UsageRow, WriteLockTaken

__all__ = ["JournalSyncer", "MessagesProxy", "Refusal"]

T = TypeVar("T")
SYNC_INTERVAL_S = 0.02  # how long the gateway's writes may wait for the journal's fdatasync (power loss only)
CHECKPOINT_INTERVAL_S = 0.5  # how often the syncer checkpoints the WAL in the loop's stead

_UNRECORDED = (
    "gastown: the gateway could not record this request's usage reservation ({exc}), so it fails closed before "
    "forwarding; the operator must make the town's store writable again (disk full? read-only?)"
)
_UNRECORDED_ROW = (
    "gastown: the gateway could not record this request's usage ({exc}), so it fails closed; the operator must "
    "make the town's store writable again (disk full? read-only?)"
)
_UNREADABLE = "gastown: the gateway cannot read the town's store ({exc})"


@dataclass(frozen=True)
class Admitted:
    agent: Agent
    upstream_name: str
    reservation: Reservation | None


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
        instance: str | None = None,
    ) -> None:
        self.town, self.config = town, config
        self.budgets, self.routes, self.reads = town.budgets, town.routes, town.gateway_reads
        self.keys = dict(keys)  # upstream name → provider key; never logged, never sent to a client
        self._secrets = [k.encode() for k in self.keys.values() if k]
        self.client = client
        self.log = log
        self.on_settled = on_settled
        self.instance = instance  # this gateway's id: the owner of the reservations it makes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metered = scope["path"].rstrip("/") == "/v1/messages"
        try:
            agent = self._authenticate(scope)
            body = await _read_body(scope, receive, *self._body_limit(metered))
            checked = check(body, scope["headers"], agent.role.value, self.config, metered=metered)
            admitted = await self._admit(agent, checked, len(body), metered)
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
        settlement = _Settlement(self, admitted, Meter(model=checked.model), checked, started)
        try:
            await self._relay(request, receive, send, settlement)
        finally:
            with anyio.CancelScope(shield=True):
                await settlement.last_chance()

    # -- steps -------------------------------------------------------------------------------------
    def _authenticate(self, scope: Scope) -> Agent:
        """The virtual key, from the headers alone: nothing of the body is read for an unknown caller. Kept
        until the store changes (`GatewayReads`), else one indexed read, on the event loop (a WAL reader never
        waits for a writer)."""
        key = _virtual_key(scope)
        if not key:
            raise Refusal(401, "authentication_error", "no gateway key: send it as x-api-key or Bearer")
        try:
            return self.reads.agent(key)
        except Unauthorized:
            raise Refusal(401, "authentication_error", "unknown or revoked gateway key") from None
        except StoreError as exc:
            raise Refusal(503, "api_error", _UNREADABLE.format(exc=exc)) from None

    def _body_limit(self, metered: bool) -> tuple[int, str]:
        if metered:
            return self.config.max_body_bytes, "max_body_bytes"
        return self.config.max_count_tokens_body_bytes, "max_count_tokens_body_bytes"

    async def _admit(self, agent: Agent, checked: Checked, body_len: int, metered: bool) -> Admitted:
        """Stop switch and route (reads, on the loop, kept until the store changes), then the reservation (the
        one write before forwarding): it is durable before a byte of the answer can reach the client."""
        model = checked.model
        try:
            stop, name = self.reads.admission(agent.name, model)
        except StoreError as exc:
            raise Refusal(503, "api_error", _UNREADABLE.format(exc=exc)) from None
        if stop is not None:
            by, why = stop.get("by"), stop.get("reason")
            msg = f"gastown: the town is stopped (emergency stop by {by}: {why}); retry after `gastown thaw`"
            raise Refusal(503, "api_error", msg)
        if name is None or name not in self.config.upstreams:
            raise Refusal(500, "api_error", f"gateway route for {agent.name}/{model} names unknown upstream {name!r}")
        upstream = self.config.upstreams[name]
        if upstream.key_ref is not None and name not in self.keys:
            message = _no_key(name, upstream, model)
            await anyio.to_thread.run_sync(self._failed_before_sending, agent, checked, name, message, metered)
        if not metered:
            return Admitted(agent, name, None)
        estimate = self.budgets.prices.estimate(model, body_len, checked.max_tokens, upstream.price)
        try:
            got = await self._write(functools.partial(self._reserve, agent, model, estimate))
        except StoreError as exc:
            self.log.error("gateway refused %s: cannot write its reservation: %s", agent.name, exc)
            raise Refusal(503, "api_error", _UNRECORDED.format(exc=exc)) from exc
        if isinstance(got, Refusal):
            raise got
        return Admitted(agent, name, got)

    async def _write(self, write: Callable[..., T]) -> T:
        """A store write from the event loop, with no thread hand-off when it can: made on the loop if the write
        lock is free at once (a few indexed statements), else in a worker thread. Either way it has committed
        when this returns (durable against a crash of this process); the journal's fdatasync (durable against
        power loss) follows within `SYNC_INTERVAL_S`, made by the `JournalSyncer`."""
        mark = self.reads.mark()
        try:
            done = write(sync=False, wait=False)
        except WriteLockTaken:
            return await anyio.to_thread.run_sync(functools.partial(write, sync=False, wait=True))
        self.reads.wrote(mark)  # usage, budgets and reservations only: the cached reads still hold
        return done

    def _reserve(
        self, agent: Agent, model: str, estimate: Estimate, *, sync: bool, wait: bool
    ) -> Reservation | Refusal:
        """Reserve, or return the refusal (what to do), recorded in the same transaction. A `StoreError` means
        nothing was written."""
        status = self.config.exhausted_status
        try:
            return self.budgets.reserve(
                agent.name, agent.rig, model, estimate, owner=self.instance,
                refused_status=status, sync=sync, wait=wait,
            )  # fmt: skip
        except BudgetBusy as exc:
            retry = str(self.config.busy_retry_after_seconds)
            return Refusal(429, "rate_limit_error", str(exc), {"retry-after": retry})
        except BudgetExceeded as exc:
            self.log.warning("gateway refused %s: budget exhausted", agent.name)
            return Refusal(status, _error_type(status), f"gastown: {exc}")

    def _failed_before_sending(
        self, agent: Agent, checked: Checked, upstream: str, message: str, metered: bool
    ) -> None:
        """Refuse with 503 a request that cannot be sent on, recording it as a failed model call (with why), so
        `agent ls` shows it and the witness counts it; never silent."""
        if metered:
            try:
                self.budgets.refused(
                    agent.name, agent.rig, checked.model, 503, checked.stream,
                    outcome="error", upstream=upstream, error=message,
                )  # fmt: skip
            except StoreError as exc:
                self.log.error("gateway could not record a failed call of %s: %s", agent.name, exc)
        self.log.warning("gateway refused %s: %s", agent.name, message)
        raise Refusal(503, "api_error", message)

    def _upstream_headers(self, scope: Scope, upstream: Upstream, name: str) -> list[tuple[bytes, bytes]]:
        headers = forward_headers(scope["headers"])
        key = self.keys.get(name)
        if key:
            if upstream.auth == "bearer":
                headers.append((b"authorization", b"Bearer " + key.encode()))
            else:
                headers.append((b"x-api-key", key.encode()))
        return headers

    async def _relay(self, request: httpx2.Request, receive: Receive, send: Send, settlement: _Settlement) -> None:
        """Forward and copy the answer back as it comes, settling before the client sees its end."""
        meter = settlement.meter
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            name = settlement.admitted.upstream_name
            msg = (
                f"gateway could not reach upstream {name} at {self.config.upstreams[name].base_url} "
                f"({type(exc).__name__}); is its model server running? `gastown route list` shows the routes"
            )
            settlement.status, settlement.outcome, settlement.error = 502, "error", msg
            with contextlib.suppress(StoreError):  # recorded before the client hears of it, like every reply
                await settlement.settle()
            await _send_error(send, 502, "api_error", msg)
            return
        status = settlement.status = response.status_code
        ok = 200 <= status < 300
        settlement.outcome = "abandoned"
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                data = redact(await _body(response), self._secrets)
                if ok:
                    meter.read_json(data)
                else:
                    settlement.error = _error_message(data, status, settlement.admitted.upstream_name)
                settlement.outcome = "ok" if ok else "error"
                try:
                    await settlement.settle()
                except StoreError as exc:
                    await _send_error(send, 503, "api_error", _UNRECORDED_ROW.format(exc=exc))
                    return
                await send(_start(status, response_headers(response.headers.raw, len(data))))
                await send({"type": "http.response.body", "body": data, "more_body": False})
                return
            await send(_start(status, response_headers(response.headers.raw, None)))
            gone, held = await _pump(response, receive, send, meter, StreamRedactor(self.keys.values()))
            if gone:
                return
            settlement.outcome = "ok" if meter.finished else "abandoned"
            try:
                await settlement.settle()
            except StoreError as exc:
                held = sse_error("api_error", _UNRECORDED_ROW.format(exc=exc))
            await send({"type": "http.response.body", "body": held, "more_body": False})
        except httpx2.HTTPError:
            return  # upstream broke mid-stream: meter what passed
        finally:
            await response.aclose()


class JournalSyncer:
    """Makes the gateway's writes durable against power loss, and keeps the WAL's checkpoints off the event loop:
    a thread that wakes every `interval` seconds on its own clock and, when writes were made since, runs one
    fdatasync of the journal; every `checkpoint_every` seconds it also checkpoints the WAL (the loop's connection
    does not: one that fell to a request's commit cost that request milliseconds): PASSIVE, and RESTART when a
    flood of writes kept the PASSIVE ones from ever catching up (`Database.checkpoint`), so the WAL stays
    bounded. The event loop never signals it: waking a thread costs the loop more than the write itself did."""

    def __init__(
        self,
        sync: Callable[[], None],
        log: logging.Logger,
        interval: float = SYNC_INTERVAL_S,
        checkpoint: Callable[[], None] | None = None,
        checkpoint_every: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.sync, self.log, self.interval = sync, log, interval
        self.checkpoint = checkpoint
        self._ticks_per_checkpoint = max(1, round(checkpoint_every / interval))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-journal-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after one last sync."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval):
            self._once(self.sync, "sync the town's journal")
            tick += 1
            if self.checkpoint is not None and tick % self._ticks_per_checkpoint == 0:
                self._once(self.checkpoint, "checkpoint the town's WAL")
        self._once(self.sync, "sync the town's journal")

    def _once(self, job: Callable[[], None], what: str) -> None:
        try:
            job()
        except Exception as exc:  # a dead syncer would leave every later write unsynced: report and go on
            self.log.error("gateway could not %s: %s", what, exc)


class _Settlement:
    """Settles one request's reservation exactly once: on the success path before the client sees the end
    (a `StoreError` then reaches the client), otherwise at the very end (client gone, upstream broke). If the
    row cannot be written, the reservation stays in the store: it holds its budgets, and the next gateway's
    start charges it in full (`Budgets.settle_leftovers`)."""

    def __init__(
        self, proxy: MessagesProxy, admitted: Admitted, meter: Meter, checked: Checked, started: float
    ) -> None:
        self.proxy, self.admitted, self.meter, self.checked, self.started = proxy, admitted, meter, checked, started
        self.status, self.outcome = 502, "error"
        self.error: str | None = None
        self.done = False

    async def settle(self) -> None:
        reservation, status = self.admitted.reservation, self.status
        if self.done or reservation is None:
            return
        self.done = True
        proxy, meter = self.proxy, self.meter
        ms = (time.perf_counter() - self.started) * 1000
        upstream = proxy.config.upstreams[self.admitted.upstream_name]
        row = await proxy._write(
            functools.partial(
                proxy.budgets.settle,
                reservation,
                meter.usage() if 200 <= status < 300 else Usage(),
                model=meter.model or self.checked.model,
                upstream=self.admitted.upstream_name,
                status=status,
                outcome=self.outcome,
                duration_ms=ms,
                stream=self.checked.stream,
                price=upstream.price,
                error=self.error or meter.error,
            )
        )
        proxy.log.info(
            "gateway %s %s %s %s in=%d out=%d cw=%d cr=%d $%.6f %.1fms",
            self.admitted.agent.name, row.model, status, self.outcome, row.input_tokens, row.output_tokens,
            row.cache_creation_tokens, row.cache_read_tokens, row.cost_usd, ms,
        )  # fmt: skip
        if proxy.on_settled is not None:
            proxy.on_settled(row)

    async def last_chance(self) -> None:
        """Settle whatever was not settled on the way out; the client can no longer be told if this fails."""
        try:
            await self.settle()
        except StoreError as exc:
            self.proxy.log.error(
                "gateway could not record usage for %s (%s %s): %s; its reservation stays, and the gateway's next "
                "start charges it in full", self.admitted.agent.name, self.status, self.outcome, exc,
            )  # fmt: skip


async def _pump(
    response: httpx2.Response, receive: Receive, send: Send, meter: Meter, redactor: StreamRedactor
) -> tuple[bool, bytes]:
    """Copy SSE bytes through as they come, redacted; from the chunk that ends the message (`message_stop`)
    on, hold them back so usage is settled first. Returns (client hung up, bytes held back).

    A hang-up is heard by a plain task reading `receive`, which cancels the copying (an anyio cancel scope, so
    the upstream read stops at once): a fifth of what a task group costs a stream."""
    held = b""
    copying = True
    with anyio.CancelScope() as scope:

        def heard(task: asyncio.Task[None]) -> None:
            if copying and not task.cancelled():
                scope.cancel()

        watcher = asyncio.ensure_future(_hang_up(receive))
        watcher.add_done_callback(heard)
        try:
            async for chunk in response.aiter_raw():
                meter.feed(chunk)
                out = redactor.feed(chunk)
                if meter.finished or held:
                    held += out
                elif out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        finally:
            copying = False
            watcher.cancel()
    gone = watcher.done() and not watcher.cancelled()
    if gone:
        watcher.exception()  # a broken receive is a client gone too; retrieved, so not logged as lost
    return gone, held + redactor.flush()


async def _hang_up(receive: Receive) -> None:
    """Return when the client disconnects (uvicorn's `send` says nothing of it)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _body(response: httpx2.Response) -> bytes:
    """A whole response body as it came (upstreams are asked for `identity`, as the stream path assumes), or
    decoded when an upstream compressed it anyway (the client gets it without the content-encoding)."""
    if "content-encoding" in response.headers:
        return await response.aread()
    return b"".join([chunk async for chunk in response.aiter_raw()])


def _no_key(name: str, upstream: Upstream, model: str) -> str:
    where = f"the key file {upstream.key_file} (in the town directory)" if upstream.key_file else upstream.key_env
    return (
        f"gastown: upstream {name} ({upstream.base_url}) has no key: {where} was not set when the town started, so "
        f"no request for {model} is sent there. Set it and restart `gastown up`, or route the model elsewhere "
        f"(`gastown route add UPSTREAM --model '{model}'`; `gastown route list` shows the routes)"
    )


def _error_message(data: bytes, status: int, upstream: str) -> str:
    """The upstream's own error message (Anthropic's shape), else the start of its body."""
    try:
        error = json.loads(data).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    text = message if isinstance(message, str) and message else data[:200].decode("utf-8", "replace")
    return f"upstream {upstream} answered {status}: {text}"


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


async def _read_body(scope: Scope, receive: Receive, limit: int, setting: str) -> bytes:
    """The body, refused as soon as it is known to be over `limit`: by its Content-Length before reading."""
    too_big = (
        f"request body over the gateway's {limit} byte limit for {scope['path']}; send less, or raise "
        f"[gateway] {setting} in town.toml"
    )
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise Refusal(400, "invalid_request_error", "Content-Length is not a number") from None
            if declared > limit:
                raise Refusal(413, "request_too_large", too_big)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(499, "api_error", "client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, "request_too_large", too_big)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


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
