"""The gateway end to end: the real anthropic client → gateway (uvicorn) → scripted stand-in (uvicorn)."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gastown_mcp.gateway import GatewayConfig, Upstream, build_gateway
from gastown_mcp.models import AgentState, Role, Verb
from gastown_mcp.serving import serve
from gastown_mcp.standin import Echo, Fails, Hello, Script, Sequenced, Standin, Text, ToolCall, Turn, build_standin
from gastown_mcp.store import Store
from gastown_mcp.store.usage import UsageRow
from gastown_mcp.town import Town as DomainTown
from gastown_mcp.town.budgets import Budgets, PriceTable, Routes
from gastown_mcp.town.budgets import Route as RouteRow

SENTINEL = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"


@pytest.fixture
def key(store: Store) -> str:
    return store.agents.create("test", "polecat-1", Role.polecat, rig="web").gateway_key


@dataclass
class Town:
    url: str
    standin: Standin
    store: Store
    settled: list[UsageRow] = field(default_factory=list)
    send: Any = None
    receive: Any = None
    instance: str = ""  # the gateway instance id: the owner of the reservations it makes

    def client(self, key: str, **kw: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=key, **kw)

    async def next_settled(self) -> UsageRow:
        with anyio.fail_after(10):
            row: UsageRow = await self.receive.receive()
            return row

    def rows(self) -> list[Any]:
        return self.store.db.query("SELECT * FROM usage ORDER BY id")


@contextlib.asynccontextmanager
async def town(
    store: Store,
    script: Script,
    upstream_app: Any = None,
    chunk_chars: int = 24,
    domain_store: Any = None,
    **config: Any,
) -> AsyncIterator[Town]:
    """Stand-in + gateway on loopback; `domain_store` replaces the store the domain `Town` sees (a fake)."""
    standin = build_standin(script, expected_key=SENTINEL, chunk_chars=chunk_chars)
    async with serve(upstream_app or standin.app) as upstream_url:
        cfg = GatewayConfig(
            upstreams={"standin": Upstream(base_url=upstream_url)}, default_upstream="standin", **config
        )
        send, receive = anyio.create_memory_object_stream[UsageRow](100)
        t = Town("", standin, store, send=send, receive=receive)

        def settled(row: UsageRow) -> None:
            t.settled.append(row)
            send.send_nowait(row)

        domain = DomainTown(domain_store or store, store.settings.model_copy(update={"gateway": cfg}))
        app = build_gateway(domain, {"ANTHROPIC_API_KEY": SENTINEL}, on_settled=settled)
        t.instance = app.state.instance
        async with serve(app) as url:
            t.url = url
            yield t
        send.close()
        receive.close()


def _expected_cost(row: Any) -> float:
    # Sonnet-class list prices (USD per Mtok): input 3, output 15, cache write 3.75, cache read 0.30.
    return (
        row["input_tokens"] * 3
        + row["output_tokens"] * 15
        + row["cache_creation_tokens"] * 3.75
        + row["cache_read_tokens"] * 0.3
    ) / 1e6


async def test_a_json_request_is_metered_exactly_as_the_standin_reported(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        msg = await t.client(key).messages.create(
            model="scripted-standin", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
    [row] = t.rows()
    reported = t.standin.requests[-1].usage
    assert reported is not None
    assert (row["input_tokens"], row["output_tokens"]) == (reported["input_tokens"], reported["output_tokens"])
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (row["input_tokens"], row["output_tokens"])
    assert row["agent"] == "polecat-1" and row["rig"] == "web" and row["model"] == "scripted-standin"
    assert row["outcome"] == "ok" and row["status"] == 200 and row["stream"] == 0
    assert row["cost_usd"] == pytest.approx(_expected_cost(row))


async def test_a_streamed_request_with_cache_control_is_metered_exactly(store: Store, key: str) -> None:
    system = [{"type": "text", "text": "You are a polecat. " * 200, "cache_control": {"type": "ephemeral"}}]
    async with town(store, Hello()) as t:
        client = t.client(key)
        finals = []
        for _ in range(2):
            async with client.messages.stream(
                model="scripted-standin",
                max_tokens=200,
                system=system,  # type: ignore[arg-type]
                messages=[{"role": "user", "content": "work"}],
            ) as stream:
                finals.append(await stream.get_final_message())
    rows = t.rows()
    assert len(rows) == 2
    for row, final, rec in zip(rows, finals, t.standin.requests, strict=True):
        assert rec.usage is not None
        assert row["input_tokens"] == rec.usage["input_tokens"] == final.usage.input_tokens
        assert row["output_tokens"] == rec.usage["output_tokens"] == final.usage.output_tokens
        assert row["cache_creation_tokens"] == rec.usage["cache_creation_input_tokens"]
        assert row["cache_read_tokens"] == rec.usage["cache_read_input_tokens"]
        assert row["stream"] == 1 and row["outcome"] == "ok"
        assert row["cost_usd"] == pytest.approx(_expected_cost(row))
    assert rows[0]["cache_creation_tokens"] > 0 and rows[0]["cache_read_tokens"] == 0
    assert rows[1]["cache_read_tokens"] == rows[0]["cache_creation_tokens"]


async def test_tool_use_blocks_stream_through_intact(store: Store, key: str) -> None:
    call = ToolCall(name="mcp__gastown__bead_show", input={"id": "gt-4f2a", "deep": {"x": [1, 2, 3]}})
    async with town(store, Sequenced([Turn([Text("Looking."), call])]), chunk_chars=3) as t:
        stream = t.client(key).messages.stream(
            model="scripted-standin", max_tokens=50, messages=[{"role": "user", "content": "go"}]
        )
        async with stream as s:
            final = await s.get_final_message()
    assert final.stop_reason == "tool_use"
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.input == call.input and tool.id == call.id


async def test_anthropic_version_and_beta_headers_reach_the_upstream(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        # A beta the default [gateway] allowed_betas admits (Claude Code sends it); others are refused.
        headers = {"anthropic-beta": "claude-code-20250219", "anthropic-version": "2023-06-01"}
        await t.client(key, default_headers=headers).messages.create(
            model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    headers = t.standin.requests[-1].headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "claude-code-20250219"
    assert headers["x-api-key"] == SENTINEL and key not in json.dumps(headers)


async def test_an_exhausted_budget_refuses_the_next_request_with_a_clear_error(store: Store, key: str) -> None:
    Budgets(store).set("overseer", "agent", "polecat-1", tokens=10)
    async with town(store, Hello()) as t:
        client = t.client(key, max_retries=0)
        await client.messages.create(
            model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(anthropic.PaymentRequiredError) as err:
            await client.messages.create(
                model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "again"}]
            )
    assert "budget is spent" in err.value.message and "gastown budget set" in err.value.message
    assert len(t.standin.requests) == 1
    assert [r["outcome"] for r in t.rows()] == ["ok", "refused"]
    events = store.db.query("SELECT * FROM events WHERE verb=?", (Verb.budget_exhausted,))
    assert len(events) == 1 and json.loads(events[0]["after"])["scope"] == "agent"


async def test_twenty_concurrent_requests_overspend_by_no_more_than_one_reservation(store: Store, key: str) -> None:
    limit = 3000
    Budgets(store).set("overseer", "rig", "web", tokens=limit)
    statuses: list[int] = []
    async with town(store, Echo()) as t:
        client = t.client(key, max_retries=0)

        async def one(i: int) -> None:
            try:
                await client.messages.create(
                    model="scripted-standin",
                    max_tokens=64,
                    messages=[{"role": "user", "content": f"request {i} " + "pad " * 20}],
                )
                statuses.append(200)
            except anthropic.APIStatusError as exc:
                statuses.append(exc.status_code)

        with anyio.fail_after(60):
            while 402 not in statuses:
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(one, i)
    [budget] = Budgets(store).show("rig", "web")
    largest_reservation = max(len(json.dumps(r.body)) + 64 for r in t.standin.requests)
    assert budget.tokens_spent >= limit
    assert budget.tokens_spent - limit <= largest_reservation
    assert set(statuses) <= {200, 402, 429}
    assert store.db.query_one("SELECT COUNT(*) AS n FROM reservations")["n"] == 0


async def test_a_busy_budget_answers_429_with_retry_after(store: Store, key: str) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "agent", "polecat-1", tokens=1000)
    async with town(store, Hello()) as t, httpx2.AsyncClient() as http:
        # count_tokens waits out the gateway's start, which releases reservations no live gateway owns.
        counted = {"model": "scripted-standin", "messages": []}
        await http.post(t.url + "/v1/messages/count_tokens", headers={"x-api-key": key}, json=counted)
        estimate = PriceTable().estimate("scripted-standin", 900, 100)
        held = budgets.reserve("polecat-1", "web", "scripted-standin", estimate, owner=t.instance)
        r = await http.post(
            t.url + "/v1/messages",
            headers={"x-api-key": key},
            json={"model": "scripted-standin", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["type"] == "rate_limit_error"
    budgets.settle(held, budgets_usage_zero())


def budgets_usage_zero() -> Any:
    from gastown_mcp.town.budgets import Usage

    return Usage()


async def test_an_unknown_key_gives_401(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        with pytest.raises(anthropic.AuthenticationError):
            await t.client("gtk_not-a-key", max_retries=0).messages.create(
                model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert t.standin.requests == []


async def test_a_revoked_key_gives_401(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        client = t.client(key, max_retries=0)
        await client.messages.create(
            model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "a"}]
        )
        store.agents.set_state("mayor", "polecat-1", AgentState.removed)
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(
                model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "b"}]
            )
    assert len(t.standin.requests) == 1


async def test_upstream_errors_come_back_unchanged_and_cost_nothing(store: Store, key: str) -> None:
    async with town(store, Fails(403)) as t:
        with pytest.raises(anthropic.PermissionDeniedError) as err:
            await t.client(key, max_retries=0).messages.create(
                model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert err.value.body == {
        "type": "error",
        "error": {"type": "permission_error", "message": "scripted stand-in error 403 (permission_error)"},
    }
    [row] = t.rows()
    assert (row["status"], row["outcome"], row["input_tokens"], row["cost_usd"]) == (403, "error", 0, 0)


async def test_the_provider_key_never_reaches_a_client_or_a_log(
    store: Store, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    Budgets(store).set("overseer", "agent", "polecat-1", tokens=1)
    seen: list[str] = []
    body = {"model": "scripted-standin", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    async with town(store, Hello()) as t, httpx2.AsyncClient() as http:
        for headers, payload in [
            ({"x-api-key": key}, {**body, "stream": True}),  # admitted (spent 0 < 1)
            ({"x-api-key": key}, body),  # refused: budget spent
            ({"authorization": f"Bearer {key}x"}, body),  # unknown key
            ({}, body),  # no key
            ({"x-api-key": key}, {"not": "a message"}),
        ]:
            async with http.stream("POST", t.url + "/v1/messages", headers=headers, json=payload) as r:
                seen.append(json.dumps(dict(r.headers)) + (await r.aread()).decode())
        r2 = await http.post(t.url + "/v1/messages/count_tokens", headers={"x-api-key": key}, json=body)
        seen.append(json.dumps(dict(r2.headers)) + r2.text)
    assert t.standin.requests and all(r.headers["x-api-key"] == SENTINEL for r in t.standin.requests)
    assert "message_start" in seen[0] and "budget is spent" in seen[1]
    for text in [*seen, caplog.text]:
        assert SENTINEL not in text


async def test_count_tokens_passes_through_without_a_usage_row(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        counted = await t.client(key).messages.count_tokens(
            model="scripted-standin", messages=[{"role": "user", "content": "how long is this"}]
        )
    assert counted.input_tokens > 0 and t.rows() == []


async def test_a_route_sends_one_agent_to_another_upstream(store: Store, key: str) -> None:
    anthropic_like, local = build_standin(Hello(), expected_key=SENTINEL), build_standin(Echo())
    Routes(store).set("mayor", RouteRow(agent="polecat-*", model="scripted-*", upstream="local"))
    async with serve(anthropic_like.app) as remote_url, serve(local.app) as local_url:
        cfg = GatewayConfig(
            upstreams={
                "anthropic": Upstream(base_url=remote_url),
                "local": Upstream(base_url=local_url, key_env=None),
            },
        )
        domain = DomainTown(store, store.settings.model_copy(update={"gateway": cfg}))
        async with serve(build_gateway(domain, {"ANTHROPIC_API_KEY": SENTINEL})) as url:
            client = anthropic.AsyncAnthropic(base_url=url, api_key=key)
            routed = await client.messages.create(
                model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "ping"}]
            )
            default = await client.messages.create(
                model="other-model", max_tokens=10, messages=[{"role": "user", "content": "ping"}]
            )
    assert routed.content[0].type == "text" and routed.content[0].text == "echo: ping"
    assert default.content[0].type == "text" and default.content[0].text.startswith("Hello")
    assert "x-api-key" not in local.requests[-1].headers and len(anthropic_like.requests) == 1
    assert [r["upstream"] for r in store.db.query("SELECT upstream FROM usage ORDER BY id")] == ["local", "anthropic"]


def _hanging_upstream(produced: anyio.Event) -> Starlette:
    """A Messages API that starts a stream, sends some text, then never finishes."""

    async def messages(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            usage = {"input_tokens": 120, "output_tokens": 1, "cache_read_input_tokens": 30}
            start = {"type": "message_start", "message": {"id": "m", "model": "scripted-standin", "usage": usage}}
            yield f"event: message_start\ndata: {json.dumps(start)}\n\n".encode()
            for _ in range(10):
                delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "abcd"}}
                yield f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
            produced.set()
            await anyio.Event().wait()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


async def test_an_abandoned_stream_is_metered_for_what_was_produced(store: Store, key: str) -> None:
    produced = anyio.Event()
    body = {
        "model": "scripted-standin",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with town(store, Hello(), upstream_app=_hanging_upstream(produced)) as t:
        async with (
            httpx2.AsyncClient() as http,
            http.stream("POST", t.url + "/v1/messages", headers={"x-api-key": key}, json=body) as r,
        ):
            async for chunk in r.aiter_bytes():
                if b"message_start" in chunk:
                    break
            with anyio.fail_after(10):
                await produced.wait()
        row = await t.next_settled()
    assert row.outcome == "abandoned" and row.input_tokens == 120 and row.cache_read_tokens == 30
    assert 1 <= row.output_tokens <= 10  # 40 characters of text passed at most
    assert t.rows()[0]["outcome"] == "abandoned"


# -- a real Claude Code ----------------------------------------------------------------------------
CLAUDE = Path(__file__).resolve().parent.parent / ".cache/npm-claude/node_modules/@anthropic-ai"
CLAUDE_BIN = CLAUDE / "claude-code-linux-x64/claude"
needs_claude = pytest.mark.skipif(
    not CLAUDE_BIN.exists(),
    reason=f"Claude Code is not installed at {CLAUDE_BIN}; "
    "run `npm install --prefix .cache/npm-claude @anthropic-ai/claude-code`",
)


async def _claude(prompt: str, gateway_url: str, key: str, home: Path, cwd: Path, *extra: str) -> dict[str, Any]:
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "ANTHROPIC_BASE_URL": gateway_url,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ENABLE_TOOL_SEARCH": "false",
        "DISABLE_AUTOUPDATER": "1",
    }
    cmd = [str(CLAUDE_BIN), "-p", prompt, "--output-format", "json", "--model", "scripted-standin", *extra]
    with anyio.fail_after(180):
        done = await anyio.run_process(cmd, env=env, cwd=cwd, check=False)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _metered_totals(store: Store) -> dict[str, int]:
    row = store.db.query_one(
        "SELECT SUM(input_tokens) AS i, SUM(output_tokens) AS o, SUM(cache_creation_tokens) AS cw, "
        "SUM(cache_read_tokens) AS cr FROM usage"
    )
    return {"inputTokens": row["i"], "outputTokens": row["o"], "cacheCreationInputTokens": row["cw"],
            "cacheReadInputTokens": row["cr"]}  # fmt: skip


def _reported_totals(result: dict[str, Any]) -> dict[str, int]:
    kinds = ("inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens")
    return {k: sum(m[k] for m in result["modelUsage"].values()) for k in kinds}


@pytest.mark.claude
@needs_claude
async def test_claude_code_completes_through_the_gateway_and_its_usage_matches_the_meter(
    store: Store, key: str, tmp_path: Path
) -> None:
    async with town(store, Hello()) as t:
        result = await _claude("say hello", t.url, key, tmp_path / "home", tmp_path)
    assert result["is_error"] is False and result["result"] == "Hello from the scripted stand-in."
    assert _reported_totals(result) == _metered_totals(store)
    assert result["usage"]["input_tokens"] == t.rows()[-1]["input_tokens"]
    assert all(r.headers["x-api-key"] == SENTINEL for r in t.standin.requests)


@pytest.mark.claude
@needs_claude
async def test_claude_code_stops_on_an_exhausted_budget_and_shows_why(store: Store, key: str, tmp_path: Path) -> None:
    Budgets(store).set("overseer", "town", tokens=0)
    async with town(store, Hello()) as t:
        result = await _claude("say hello", t.url, key, tmp_path / "home", tmp_path)
    assert result["is_error"] is True and result["api_error_status"] == 402
    assert "budget is spent" in result["result"]
    assert t.standin.requests == []
    assert [r["outcome"] for r in t.rows()] == ["refused"]  # one attempt: Claude Code did not retry


@pytest.mark.claude
@needs_claude
async def test_claude_code_plays_a_polecat_against_the_standin_through_the_gateway(
    store: Store, tmp_path: Path
) -> None:
    from gastown_mcp.server import http_app
    from gastown_mcp.serving import bind
    from gastown_mcp.standin import Polecat
    from gastown_mcp.town import Town as TownApi

    settings = store.settings
    api = TownApi(store, settings)
    mayor = store.agents.create("test", "mayor", Role.mayor).agent
    creds = store.agents.create("test", "polecat-1", Role.polecat, rig="web")
    bead = api.bead_create(mayor, "Write the release notes", description="One file is enough.")
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                        "--allow-empty", "-m", "start"]):  # fmt: skip
        await anyio.run_process(cmd, cwd=repo)
    sock = bind()
    port = sock.getsockname()[1]
    mcp_url = f"http://127.0.0.1:{port}/mcp"
    mcp_config = {"mcpServers": {"gastown": {"type": "http", "url": mcp_url,
                                             "headers": {"Authorization": f"Bearer {creds.token}"}}}}  # fmt: skip
    tools = "mcp__gastown__bead_show,mcp__gastown__bead_claim,mcp__gastown__bead_complete,Write,Bash"
    async with serve(http_app(api, "127.0.0.1", port), sock=sock), town(store, Polecat()) as t:
        result = await _claude(
            f"You are polecat-1. Work bead {bead.id}: claim it, do it, commit, and complete it.",
            t.url,
            creds.gateway_key,
            tmp_path / "home",
            repo,
            "--mcp-config",
            json.dumps(mcp_config),
            "--strict-mcp-config",
            "--allowedTools",
            tools,
            "--max-turns",
            "12",
        )
    head = (await anyio.run_process(["git", "rev-parse", "HEAD"], cwd=repo)).stdout.decode().strip()
    done = api.bead_show(mayor, bead.id)
    assert result["is_error"] is False, result
    assert result["permission_denials"] == []
    assert done.status == "done" and done.result is not None and done.result.commit == head
    assert (repo / f"{bead.id}.md").exists()
    assert _reported_totals(result) == _metered_totals(store)
    assert {r["agent"] for r in t.rows()} == {"polecat-1"}


async def test_no_model_call_passes_while_the_town_is_stopped(store: Store, key: str) -> None:
    async with town(store, Hello()) as t:
        client = t.client(key, max_retries=0)
        store.health.set("operator", "estop", {"by": "operator", "reason": "drill"}, Verb.town_estopped)
        with pytest.raises(anthropic.APIStatusError) as err:
            await client.messages.create(
                model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "a"}]
            )
        assert err.value.status_code == 503 and "emergency stop" in str(err.value)
        assert t.standin.requests == []
        store.health.clear("operator", "estop", Verb.town_thawed)
        await client.messages.create(
            model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "b"}]
        )
    assert len(t.standin.requests) == 1


async def test_upstream_rate_limits_are_recorded_for_the_dogs_to_count(store: Store, key: str) -> None:
    async with town(store, Fails(429)) as t:
        with pytest.raises(anthropic.RateLimitError):
            await t.client(key, max_retries=0).messages.create(
                model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    # The usage row is written before the client sees the end of the answer (see `_relay`).
    assert store.health.upstream_status_count(429, "2000-01-01") == 1


def _gzipping_upstream() -> Starlette:
    """A Messages API that compresses its JSON answer although the gateway asked for `identity`."""

    async def messages(request: Request) -> Response:
        usage = {"input_tokens": 11, "output_tokens": 7}
        answer = {
            "id": "msg_gz", "type": "message", "role": "assistant", "model": "scripted-standin",
            "content": [{"type": "text", "text": "squeezed"}], "stop_reason": "end_turn", "usage": usage,
        }  # fmt: skip
        body = gzip.compress(json.dumps(answer).encode())
        return Response(body, media_type="application/json", headers={"content-encoding": "gzip"})

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


async def test_a_json_answer_compressed_anyway_reaches_the_client_decoded_and_is_metered(
    store: Store, key: str
) -> None:
    async with town(store, Hello(), upstream_app=_gzipping_upstream()) as t:
        msg = await t.client(key).messages.create(
            model="scripted-standin", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert msg.content[0].type == "text" and msg.content[0].text == "squeezed"
    [row] = t.rows()
    assert (row["input_tokens"], row["output_tokens"], row["outcome"]) == (11, 7, "ok")
