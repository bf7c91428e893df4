"""A real local model behind the gateway: llama.cpp's `llama-server` with SmolLM2-135M (pinned wheels, `make
localmodel`), reached by the real `anthropic` client through the gateway. Each test asserts protocol (where a
request went, event order, stop reasons, usage, keys), never the model's text.

A recording pass-through sits between the gateway and the model server, so the tests see exactly what the
gateway sent (headers) and what the server answered (its own usage). Skips with the reason when the pinned
wheels are not installed (the registry no longer serves them) or this CPU cannot run the pinned server build
(`localmodel.SERVER_CPU_FLAGS`) and none was built for it (`make localmodel-native`); otherwise these tests must
pass.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gastown_mcp.assemble import provider_env
from gastown_mcp.config import GatewaySection, Price
from gastown_mcp.errors import NotFound
from gastown_mcp.gateway import build_gateway, localmodel
from gastown_mcp.models import Role
from gastown_mcp.serving import bind, serve
from gastown_mcp.standin import Hello, Standin, build_standin
from gastown_mcp.store import Store
from gastown_mcp.store.usage import UsageRow
from gastown_mcp.town import Town, operator

pytestmark = pytest.mark.localmodel

SENTINEL = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"  # the other upstream's provider key
MODEL = localmodel.DEFAULT_ALIAS
KEY_FILE = "run/local-model.key"
GREEDY = {"temperature": 0.0}  # the same tokens each run: the assertions need a reply longer than 8
PROMPT = [{"role": "user", "content": "Write a long story about a cat who sails around the world."}]


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localmodel.LocalModel]:
    try:
        server, model = localmodel.locate()
    except NotFound as exc:
        pytest.skip(str(exc))
    where = tmp_path_factory.mktemp("local-model")
    sock = bind()  # a free port, released just before the server takes it
    port = sock.getsockname()[1]
    sock.close()
    spec = localmodel.LocalModel(server, model, where / "key", port=port, threads=1, ctx=1024)
    localmodel.ensure_key(spec.key_file)
    process = localmodel.start(spec, where / "server.log")
    try:
        localmodel.wait_ready(spec, process, timeout=90)
        yield spec
    finally:
        localmodel.stop(process)


@dataclass
class Seen:
    """One request the model server got from the gateway, and its answer's bytes."""

    headers: dict[str, str]
    body: dict[str, Any]
    answer: bytearray = field(default_factory=bytearray)

    def server_usage(self) -> dict[str, int]:
        """The usage the server itself reported (JSON body, or SSE message_start + message_delta)."""
        text = self.answer.decode()
        if not self.body.get("stream"):
            return dict(json.loads(text)["usage"])
        usage: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("data:"):
                data = json.loads(line[5:])
                usage.update((data.get("message") or {}).get("usage") or {})
                usage.update(data.get("usage") or {})
        return usage


def recorder(target: str, seen: list[Seen]) -> Starlette:
    """A pass-through to the model server that records what went in and what came out."""
    client = httpx2.AsyncClient(timeout=60, trust_env=False)

    async def forward(request: Request) -> Response:
        body = await request.body()
        rec = Seen({k.lower(): v for k, v in request.headers.items()}, json.loads(body))
        seen.append(rec)
        keep = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = await client.send(
            client.build_request("POST", target + request.url.path, headers=keep, content=body), stream=True
        )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    rec.answer += chunk
                    yield chunk
            finally:
                await upstream.aclose()

        media = upstream.headers.get("content-type", "application/json")
        return StreamingResponse(relay(), status_code=upstream.status_code, media_type=media)

    return Starlette(routes=[Route("/v1/messages", forward, methods=["POST"])])


@dataclass
class Rig:
    url: str
    agent_key: str
    local_key: str
    seen: list[Seen]
    standin: Standin
    store: Store
    town: Town
    settled: Any

    def client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=self.agent_key, max_retries=0, timeout=60)

    async def next_row(self) -> UsageRow:
        with anyio.fail_after(60):
            row: UsageRow = await self.settled.receive()
            return row


@contextlib.asynccontextmanager
async def gateway(
    store: Store, local: localmodel.LocalModel, price: Price | None = None, **gw: Any
) -> AsyncIterator[Rig]:
    """Stand-in as `anthropic` (with the provider key), the local server as `local` (key from its key file, as
    `gastown model serve` writes it), a runtime route sending the local model's name there, and the gateway."""
    town_dir = store.settings.town_dir
    (town_dir / "run").mkdir(parents=True, exist_ok=True)
    shutil.copy(local.key_file, town_dir / KEY_FILE)
    seen: list[Seen] = []
    standin = build_standin(Hello(), expected_key=SENTINEL)
    async with serve(standin.app) as standin_url, serve(recorder(local.url, seen)) as local_url:
        cfg = GatewaySection.model_validate(
            {
                "upstreams": {
                    "anthropic": {"base_url": standin_url},
                    "local": {"base_url": local_url, "key_file": KEY_FILE, "auth": "bearer", "price": price},
                },
                **gw,
            }
        )
        settings = store.settings.model_copy(update={"gateway": cfg})
        town = Town(store, settings)
        town.route_add(operator(), "local", model=f"{MODEL}*")
        agent_key = town.agent_add(operator(), "polecat-1", Role.polecat.value, "web").gateway_key
        keys = provider_env(settings, {"ANTHROPIC_API_KEY": SENTINEL, "PATH": "/usr/bin"})
        send, receive = anyio.create_memory_object_stream[UsageRow](100)
        app = build_gateway(town, keys, on_settled=send.send_nowait)
        async with serve(app) as url:
            yield Rig(url, agent_key, local.key_file.read_text().strip(), seen, standin, store, town, receive)
        send.close()
        receive.close()


def _row(store: Store, index: int = -1) -> Any:
    return store.db.query("SELECT * FROM usage ORDER BY id")[index]


async def test_a_routed_model_reaches_the_local_server_and_an_unrouted_one_does_not(
    store: Store, local_server: localmodel.LocalModel
) -> None:
    async with gateway(store, local_server, price=Price(input=1.0, output=2.0)) as g:
        client = g.client()
        local = await client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT, extra_body=GREEDY)  # type: ignore[arg-type]
        assert len(g.seen) == 1 and g.standin.requests == []
        other = await client.messages.create(model="scripted-standin", max_tokens=8, messages=PROMPT)  # type: ignore[arg-type]
        assert len(g.seen) == 1 and len(g.standin.requests) == 1
    assert local.stop_reason == "max_tokens" and local.usage.output_tokens == 8
    assert other.stop_reason is not None
    rows = store.db.query("SELECT * FROM usage ORDER BY id")
    assert [r["upstream"] for r in rows] == ["local", "anthropic"]
    row, reported = rows[0], g.seen[0].server_usage()
    assert (row["input_tokens"], row["output_tokens"]) == (reported["input_tokens"], reported["output_tokens"])
    assert row["cache_read_tokens"] == reported.get("cache_read_input_tokens", 0)
    assert (local.usage.input_tokens, local.usage.output_tokens) == (row["input_tokens"], row["output_tokens"])
    # The upstream's own price (USD per Mtok), not the model table's: cache reads at a tenth of input.
    expected = (row["input_tokens"] * 1.0 + row["output_tokens"] * 2.0 + row["cache_read_tokens"] * 0.1) / 1e6
    assert row["cost_usd"] == pytest.approx(expected) and row["outcome"] == "ok" and row["status"] == 200


async def test_a_stream_keeps_the_event_order_stops_at_max_tokens_and_is_metered_as_the_server_counted(
    store: Store, local_server: localmodel.LocalModel
) -> None:
    async with gateway(store, local_server, price=Price(input=0, output=0)) as g:
        kinds = []
        async with g.client().messages.stream(
            model=MODEL,
            max_tokens=8,
            messages=PROMPT,  # type: ignore[arg-type]
            extra_body=GREEDY,
        ) as stream:
            async for event in stream:
                kinds.append(event.type)
            final = await stream.get_final_message()
        row = await g.next_row()
    raw = [k for k in kinds if k not in ("text", "ping")]  # the SDK adds `text` events of its own
    assert raw[0] == "message_start" and raw[1] == "content_block_start"
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(raw[2:-3]) == {"content_block_delta"}
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 8
    reported = g.seen[0].server_usage()
    assert row.upstream == "local" and row.outcome == "ok" and row.stream
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens) == (
        reported["input_tokens"],
        reported["output_tokens"],
        reported.get("cache_read_input_tokens", 0),
    )
    assert row.cost_usd == 0.0  # priced at zero by its upstream


async def test_a_client_that_cancels_mid_stream_is_still_metered(
    store: Store, local_server: localmodel.LocalModel
) -> None:
    async with gateway(store, local_server, price=Price(input=0, output=0)) as g:
        deltas = 0
        async with g.client().messages.stream(
            model=MODEL,
            max_tokens=200,
            messages=PROMPT,  # type: ignore[arg-type]
            extra_body=GREEDY,
        ) as stream:
            async for event in stream:
                deltas += event.type == "content_block_delta"
                if deltas == 3:
                    break  # leaving the block closes the connection mid-stream
        row = await g.next_row()
    assert row.upstream == "local" and row.outcome == "abandoned"
    assert 1 <= row.output_tokens < 200
    assert row.input_tokens + row.cache_read_tokens > 0
    assert store.db.query("SELECT count(*) AS n FROM reservations")[0]["n"] == 0


async def test_a_spent_budget_stops_local_calls_before_they_reach_the_server(
    store: Store, local_server: localmodel.LocalModel
) -> None:
    async with gateway(store, local_server, price=Price(input=0, output=0)) as g:
        g.town.budget_set(operator(), "agent", "polecat-1", tokens=10)
        client = g.client()
        await client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT, extra_body=GREEDY)  # type: ignore[arg-type]
        with pytest.raises(anthropic.APIStatusError) as refused:
            await client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)  # type: ignore[arg-type]
    assert refused.value.status_code == 402
    assert len(g.seen) == 1  # the refused call never reached the model server
    [budget] = g.town.budget(operator(), "agent", "polecat-1")
    first = _row(store, 0)
    assert budget.exhausted and budget.tokens_spent == first["input_tokens"] + 8 + first["cache_read_tokens"]
    assert _row(store)["outcome"] == "refused"


async def test_the_other_upstreams_key_never_reaches_the_local_server_nor_the_local_key_an_agent(
    store: Store, local_server: localmodel.LocalModel
) -> None:
    async with gateway(store, local_server, price=Price(input=0, output=0)) as g:
        answers = []
        async with httpx2.AsyncClient(base_url=g.url, timeout=60, trust_env=False) as http:
            for stream in (False, True):
                for model in (MODEL, "scripted-standin"):
                    body = {"model": model, "max_tokens": 8, "messages": PROMPT, "stream": stream}
                    r = await http.post("/v1/messages", json=body, headers={"x-api-key": g.agent_key})
                    assert r.status_code == 200
                    answers.append(json.dumps(dict(r.headers)) + r.text)
    assert len(g.seen) == 2 and len(g.standin.requests) == 2
    for seen in g.seen:  # what the local server got: its own key, nothing of the provider's or the agent's
        assert seen.headers["authorization"] == f"Bearer {g.local_key}" and "x-api-key" not in seen.headers
        assert SENTINEL not in json.dumps(seen.headers) and g.agent_key not in json.dumps(seen.headers)
    for req in g.standin.requests:
        assert g.local_key not in json.dumps(req.headers)
    for text in answers:
        assert g.local_key not in text and SENTINEL not in text
    assert g.local_key != g.agent_key
