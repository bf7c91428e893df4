"""The gateway's security limits, each through real HTTP (httpx2, the anthropic client or a raw socket) to the
gateway on loopback in front of the scripted stand-in: reservations tied to the live gateway, request caps and
validation, deny-by-default server tools/MCP servers/betas, key before body, fail-closed metering, redaction."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from test_gateway import SENTINEL, town

from gastown_mcp.errors import StoreError
from gastown_mcp.models import Role
from gastown_mcp.standin import Echo, Hello
from gastown_mcp.store import Store
from gastown_mcp.town.budgets import Budgets, Estimate

MSG = {"model": "scripted-standin", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
# What Claude Code 2.1.197 sent on every /v1/messages request (captured from the stand-in's request log).
CLAUDE_CODE_BETA = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13,"
    "context-management-2025-06-27,prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,"
    "effort-2025-11-24"
)


@pytest.fixture
def key(store: Store) -> str:
    return store.agents.create("test", "polecat-1", Role.polecat, rig="web").gateway_key


async def _post(url: str, key: str | None, body: Any, path: str = "/v1/messages", **headers: str) -> httpx2.Response:
    hdrs = {"x-api-key": key} if key else {}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(url + path, headers={**hdrs, **headers}, content=json.dumps(body).encode())


def _error(r: httpx2.Response) -> str:
    body = r.json()
    assert body["type"] == "error", body
    return str(body["error"]["type"]) + ": " + str(body["error"]["message"])


# -- 1. reservations do not outlive their gateway ----------------------------------------------------
async def test_a_reservation_left_by_a_previous_gateway_is_charged_in_full_when_the_gateway_starts(
    store: Store, key: str
) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "town", tokens=20_000)
    # A gateway that was SIGKILLed mid-request leaves its reservation behind; its client may have had the
    # whole answer, whose usage was never recorded: the next start charges the reservation, the upper bound.
    budgets.reserve("polecat-1", "web", "scripted-standin", Estimate(tokens=5_000, usd=0.05), owner="gw-dead")
    assert budgets.show("town")[0].reserved_tokens == 5_000
    async with town(store, Hello()) as t:
        r = await _post(t.url, key, MSG)
    assert r.status_code == 200, r.text
    [shown] = budgets.show("town")
    assert shown.reserved_tokens == 0 and shown.reserved_usd == 0
    charged, answered = t.rows()
    assert (charged["agent"], charged["outcome"], charged["input_tokens"]) == ("polecat-1", "abandoned", 5_000)
    assert charged["cost_usd"] == 0.05 and "charged its whole reservation" in charged["error"]
    assert shown.tokens_spent == 5_000 + answered["input_tokens"] + answered["output_tokens"]


# -- 2. one request cannot reserve the town ---------------------------------------------------------
@pytest.mark.parametrize("max_tokens", [10**12, 10**28, 128_001])
async def test_max_tokens_over_the_cap_is_refused_with_400(store: Store, key: str, max_tokens: int) -> None:
    Budgets(store).set("overseer", "town", tokens=10**9)
    async with town(store, Hello()) as t:
        r = await _post(t.url, key, {**MSG, "max_tokens": max_tokens})
    assert r.status_code == 400, r.text
    text = _error(r)
    assert text.startswith("invalid_request_error") and "max_tokens" in text and "max_tokens_limit" in text
    assert t.standin.requests == [] and Budgets(store).show("town")[0].tokens_spent == 0


async def test_a_per_role_max_tokens_cap_applies_to_that_role(store: Store, key: str) -> None:
    async with town(store, Hello(), max_tokens_by_role={"polecat": 32_000}) as t:
        ok = await _post(t.url, key, {**MSG, "max_tokens": 32_000})
        over = await _post(t.url, key, {**MSG, "max_tokens": 32_001})
    assert ok.status_code == 200
    assert over.status_code == 400 and "max_tokens_by_role" in _error(over) and "32000" in _error(over)


# -- 3. a body the gateway cannot bound is refused before it reserves ------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 1000.0}, "max_tokens"),
        ({"max_tokens": "1000"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": None}, "model"),
        ({"model": ""}, "model"),
        ({"model": 7}, "model"),
        ({"messages": "hi"}, "messages"),
        ({"stream": "yes"}, "stream"),
    ],
)
async def test_a_body_the_gateway_cannot_bound_is_refused_with_the_field_named(
    store: Store, key: str, change: dict[str, Any], field: str
) -> None:
    Budgets(store).set("overseer", "town", tokens=20_000)
    body = {k: v for k, v in {**MSG, **change}.items() if v is not None}
    async with town(store, Echo()) as t:
        r = await _post(t.url, key, body)
    assert r.status_code == 400, r.text
    assert _error(r).startswith("invalid_request_error") and f"`{field}`" in _error(r)
    assert t.standin.requests == []
    assert store.db.query_one("SELECT COUNT(*) AS n FROM reservations")["n"] == 0


async def test_count_tokens_needs_no_max_tokens_but_is_still_validated(store: Store, key: str) -> None:
    body = {"model": "scripted-standin", "messages": [{"role": "user", "content": "how long"}]}
    async with town(store, Hello()) as t:
        ok = await _post(t.url, key, body, "/v1/messages/count_tokens")
        bad = await _post(t.url, key, {**body, "messages": None}, "/v1/messages/count_tokens")
    assert ok.status_code == 200 and ok.json()["input_tokens"] > 0
    assert bad.status_code == 400 and "`messages`" in _error(bad)


# -- 4. nothing leaves through the provider unless the town allows it -------------------------------
@pytest.mark.parametrize(
    ("change", "headers", "named", "setting"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, {}, "web_search_20250305",
         "allowed_server_tools"),
        ({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, {}, "web_fetch_20250910",
         "allowed_server_tools"),
        ({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, {}, "code_execution_20250825",
         "allowed_server_tools"),
        ({"mcp_servers": [{"type": "url", "url": "https://evil.example/mcp", "name": "x"}]}, {},
         "https://evil.example/mcp", "allowed_mcp_servers"),
        ({}, {"anthropic-beta": "mcp-client-2025-04-04"}, "mcp-client-2025-04-04", "allowed_betas"),
        ({}, {"anthropic-beta": CLAUDE_CODE_BETA + ",files-api-2025-04-14"}, "files-api-2025-04-14", "allowed_betas"),
    ],
)  # fmt: skip
async def test_server_tools_mcp_servers_and_betas_are_refused_unless_allowed(
    store: Store, key: str, change: dict[str, Any], headers: dict[str, str], named: str, setting: str
) -> None:
    async with town(store, Hello()) as t:
        r = await _post(t.url, key, {**MSG, **change}, **headers)
    assert r.status_code == 400, r.text
    text = _error(r)
    assert text.startswith("invalid_request_error") and named in text and setting in text
    assert t.standin.requests == []


async def test_custom_tools_and_claude_codes_betas_pass_and_an_allowed_server_tool_passes(
    store: Store, key: str
) -> None:
    tools = [
        {"name": "a", "input_schema": {"type": "object"}},
        {"type": "custom", "name": "b", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},
    ]
    async with town(store, Hello(), allowed_server_tools={"polecat": ["web_search_*"]}) as t:
        r = await _post(t.url, key, {**MSG, "tools": tools}, **{"anthropic-beta": CLAUDE_CODE_BETA})
    assert r.status_code == 200, r.text
    assert t.standin.requests[-1].headers["anthropic-beta"] == CLAUDE_CODE_BETA


async def test_an_allow_list_for_another_role_does_not_apply(store: Store, key: str) -> None:
    tool = {"type": "web_search_20250305", "name": "web_search"}
    async with town(store, Hello(), allowed_server_tools={"mayor": ["*"]}) as t:
        r = await _post(t.url, key, {**MSG, "tools": [tool]})
    assert r.status_code == 400 and "polecat" in _error(r)


# -- 5. the key is checked before the body is read --------------------------------------------------
async def _raw(url: str, head: str, first_body: bytes = b"") -> tuple[int, str]:
    """Send request headers (and a little of the body), then read the response head without sending more."""
    host, port = url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as sock:
        await sock.send(head.encode() + b"\r\n" + first_body)
        data = b""
        with anyio.fail_after(5):
            while b"\r\n\r\n" not in data:
                data += await sock.receive()
            head_bytes, _, rest = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    x.split(":")[1] for x in head_bytes.decode().split("\r\n") if x.lower().startswith("content-length")
                )
            )
            while len(rest) < length:
                rest += await sock.receive()
    return int(head_bytes.split()[1]), rest.decode()


def _head(path: str, length: int, *extra: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {length}", *extra]  # fmt: skip
    return "\r\n".join(lines) + "\r\n"


async def test_an_unauthenticated_request_gets_401_before_its_body_is_read(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        status, body = await _raw(t.url, _head("/v1/messages", 60_000_000), b'{"model": ')
        bad_status, _ = await _raw(t.url, _head("/v1/messages", 60_000_000, "x-api-key: gtk_nope"), b"{")
    assert status == 401 and "authentication_error" in body
    assert bad_status == 401 and t.standin.requests == []


async def test_a_declared_body_over_the_limit_gets_413_before_it_is_read(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        status, body = await _raw(t.url, _head("/v1/messages", 16 * 2**20 + 1, f"x-api-key: {key}"), b"{")
        ct_status, ct_body = await _raw(t.url, _head("/v1/messages/count_tokens", 2**20 + 1, f"x-api-key: {key}"), b"{")
    assert status == 413 and "max_body_bytes" in body
    assert ct_status == 413 and "max_count_tokens_body_bytes" in ct_body


async def test_a_chunked_body_over_the_limit_gets_413(store: Store, key: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * 600_000

    async with town(store, Hello(), max_body_bytes=1_000_000) as t, httpx2.AsyncClient() as http:
        r = await http.post(t.url + "/v1/messages", headers={"x-api-key": key}, content=chunks())
    assert r.status_code == 413 and "max_body_bytes" in _error(r)


# -- 6. usage that cannot be recorded fails closed ---------------------------------------------------
class _FailingDatabase:
    """The real town `Database`, except that once `allowed` writes have gone through, `write()` raises the
    store's own `StoreError` as a full disk makes it do (sqlite 'database or disk is full')."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.allowed: int | None = None

    def write(self, **kw: Any) -> Any:
        if self.allowed is not None:
            if self.allowed <= 0:
                raise StoreError("database write failed: database or disk is full; nothing was changed, retry")
            self.allowed -= 1
        return self.real.write(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _FailingStore:
    """A hand-written fake around the real `Store`: everything is the real thing but `db.write()`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.db = _FailingDatabase(store.db)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def _started(url: str, key: str) -> None:
    """`serve` yields once the port is bound; a count_tokens call (which writes nothing) waits out the start-up
    (whose release of old reservations is a write) before the test makes writes fail."""
    r = await _post(url, key, {"model": "m", "messages": []}, "/v1/messages/count_tokens")
    assert r.status_code == 200


async def test_a_store_that_cannot_write_refuses_requests_with_503_before_forwarding(store: Store, key: str) -> None:
    failing = _FailingStore(store)  # the agent has no budget at all
    async with town(store, Hello(), domain_store=failing) as t:
        await _started(t.url, key)
        failing.db.allowed = 0
        with pytest.raises(anthropic.InternalServerError) as err:
            await t.client(key, max_retries=0).messages.create(**MSG)
    assert err.value.status_code == 503 and "usage" in err.value.message
    assert [r.path for r in t.standin.requests] == ["/v1/messages/count_tokens"]  # nothing forwarded


async def test_a_reply_whose_usage_cannot_be_recorded_becomes_a_503(store: Store, key: str) -> None:
    failing = _FailingStore(store)
    async with town(store, Hello(), domain_store=failing) as t:
        await _started(t.url, key)
        failing.db.allowed = 1  # the reservation; the settle then fails
        r = await _post(t.url, key, MSG)
    assert r.status_code == 503 and "usage" in _error(r)
    assert [r.path for r in t.standin.requests][-1] == "/v1/messages" and t.rows() == []
    # The reservation stays (it still counts against the budgets) until the next start charges it in full.
    reserved = store.db.query_one("SELECT tokens FROM reservations")["tokens"]
    async with town(store, Hello()) as again:
        await _started(again.url, key)
    [row] = again.rows()
    assert (row["outcome"], row["input_tokens"]) == ("abandoned", reserved)
    assert store.db.query("SELECT * FROM reservations") == []


async def test_a_stream_whose_usage_cannot_be_recorded_ends_with_an_error_event(store: Store, key: str) -> None:
    failing = _FailingStore(store)
    async with town(store, Hello(), domain_store=failing) as t:
        await _started(t.url, key)
        failing.db.allowed = 1
        r = await _post(t.url, key, {**MSG, "stream": True})
        failing.db.allowed = 1
        with pytest.raises(anthropic.APIStatusError):
            async with t.client(key, max_retries=0).messages.stream(**MSG) as s:
                await s.get_final_message()
    assert r.status_code == 200 and "message_start" in r.text
    assert "event: error" in r.text and "message_stop" not in r.text and "usage" in r.text


# -- 7. streams are redacted and aborted streams metered by what was generated ----------------------
def _message_start(input_tokens: int) -> bytes:
    usage = {"input_tokens": input_tokens, "output_tokens": 1}
    start = {"type": "message_start", "message": {"id": "m", "model": "scripted-standin", "usage": usage}}
    return f"event: message_start\ndata: {json.dumps(start)}\n\n".encode()


def _leaky_upstream() -> Starlette:
    """A Messages API that echoes the key it was sent into a stream, split across two chunks."""

    async def messages(request: Request) -> StreamingResponse:
        leaked = request.headers["x-api-key"]

        async def events() -> AsyncIterator[bytes]:
            yield _message_start(input_tokens=5)
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": leaked}}
            line = f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
            cut = line.index(leaked.encode()) + len(leaked) // 2
            yield line[:cut]
            await anyio.sleep(0.01)  # let the first half leave as a chunk of its own
            yield line[cut:]
            end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}
            yield f"event: message_delta\ndata: {json.dumps(end)}\n\nevent: message_stop\ndata: {{}}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


async def test_a_provider_key_echoed_in_a_stream_is_redacted_even_across_chunks(store: Store, key: str) -> None:
    async with town(store, Hello(), upstream_app=_leaky_upstream()) as t:
        r = await _post(t.url, key, {**MSG, "stream": True})
    assert r.status_code == 200 and "message_stop" in r.text
    assert SENTINEL not in r.text and SENTINEL[:20] not in r.text and "[redacted]" in r.text


def _hanging_upstream(text: str, produced: anyio.Event) -> Starlette:
    async def messages(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield _message_start(input_tokens=10)
            for piece in _pieces(text, 10):
                delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
                yield f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
            produced.set()
            await anyio.Event().wait()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def _pieces(text: str, n: int) -> Iterator[str]:
    size = max(1, len(text) // n)
    for i in range(0, len(text), size):
        yield text[i : i + size]


@pytest.mark.parametrize(
    "text", ["abcd" * 40, "Привет, мир! " * 12, "数据库迁移" * 12, "🙂" * 40], ids=["ascii", "cyrillic", "cjk", "emoji"]
)
async def test_an_aborted_stream_is_metered_by_the_utf8_text_it_generated(store: Store, key: str, text: str) -> None:
    produced = anyio.Event()
    async with town(store, Hello(), upstream_app=_hanging_upstream(text, produced)) as t:
        async with (
            httpx2.AsyncClient() as http,
            http.stream("POST", t.url + "/v1/messages", headers={"x-api-key": key}, json={**MSG, "stream": True}) as r,
        ):
            seen, deltas = b"", len(list(_pieces(text, 10)))
            with anyio.fail_after(10):
                async for chunk in r.aiter_bytes():  # hang up once every delta has reached the client
                    seen += chunk
                    if seen.count(b"event: content_block_delta") == deltas and seen.endswith(b"\n\n"):
                        break
        row = await t.next_settled()
    assert row.outcome == "abandoned"
    # The stand-in's measure (and the usual rule of thumb) is UTF-8 bytes / 4, so ASCII and other text agree.
    assert row.output_tokens == math.ceil(len(text.encode()) / 4)


def test_a_key_too_short_to_be_a_secret_is_not_redacted_so_replies_stay_intact() -> None:
    from gastown_mcp.gateway.wire import StreamRedactor, redact

    body = b'{"type":"tool_use","name":"bash","input":{"k":"kk"}}'
    assert redact(body, [b"k"]) == body
    assert StreamRedactor(["k"]).feed(body) == body
    assert redact(b"xx" + b"s" * 20 + b"yy", [b"s" * 20]) == b"xx[redacted]yy"
