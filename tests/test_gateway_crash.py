"""A response a client received is always metered, even when the gateway dies before its usage row: the
reservation written before the request is forwarded is charged in full by the next gateway's start.

A stream's text goes out as it comes; only its end (`message_stop`) waits for the usage row. So a client can
hold the whole answer, text and usage, when the gateway is killed. The gateway runs as a process of its own
(the real app, uvicorn, the town's SQLite file) so it can be killed with SIGKILL; the stand-in holds back its
`message_stop` until the kill, which makes the moment exact.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from gastown_mcp.config import GatewayConfig, Settings, Upstream
from gastown_mcp.models import Role
from gastown_mcp.serving import serve
from gastown_mcp.standin import Hello, build_standin
from gastown_mcp.store import Store
from gastown_mcp.town.budgets import Budgets

pytestmark = pytest.mark.slow

SENTINEL = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"
WAIT_S = 30
MSG = {"model": "scripted-standin", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
STOP = b"event: message_stop"


def gateway_process(town_dir: str, upstream: str, pipe: Any) -> None:
    """The gateway as `gastown up` builds it, on a port of its own, until killed."""
    from gastown_mcp import assemble, serving
    from gastown_mcp.gateway import build_gateway

    gateway = GatewayConfig(upstreams={"standin": Upstream(base_url=upstream)}, default_upstream="standin")
    town = assemble.open_town(Settings(town_dir=Path(town_dir), gateway=gateway))
    sock = serving.bind()
    pipe.send(sock.getsockname()[1])
    serving.make_server(build_gateway(town, {"ANTHROPIC_API_KEY": SENTINEL})).run(sockets=[sock])


class Gateway:
    def __init__(self, town_dir: Path, upstream: str) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=gateway_process, args=(str(town_dir), upstream, child), daemon=True)
        self.proc.start()
        assert parent.poll(WAIT_S), "the gateway process did not start"
        self.url = f"http://127.0.0.1:{parent.recv()}"

    async def started(self, key: str) -> None:
        """A count_tokens answer: the app's start-up (which settles what a dead gateway left) has run."""
        async with httpx2.AsyncClient(timeout=WAIT_S) as http:
            r = await http.post(self.url + "/v1/messages/count_tokens", json=MSG, headers={"x-api-key": key})
        assert r.status_code == 200, r.text

    def kill(self) -> None:
        assert self.proc.pid is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(WAIT_S)
        assert self.proc.exitcode == -signal.SIGKILL


def _text(sse: bytes) -> str:
    events = [json.loads(line[5:]) for line in sse.decode().splitlines() if line.startswith("data:")]
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")


class HoldsTheEnd:
    """Wraps the real stand-in: a stream's `message_stop` waits for `release`; everything before it passes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.release = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def held_send(message: Any) -> None:
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and STOP in body:
                cut = body.index(STOP)
                await send({**message, "body": body[:cut], "more_body": True})
                await self.release.wait()
                message = {**message, "body": body[cut:]}
            await send(message)

        await self.app(scope, receive, held_send)


async def test_a_stream_whose_client_had_the_whole_answer_is_metered_though_the_gateway_died_before_its_row(
    store: Store, settings: Settings
) -> None:
    key = store.agents.create("test", "polecat-1", Role.polecat, rig="web").gateway_key
    budgets = Budgets(store)
    budgets.set("operator", "town", tokens=1_000_000)
    standin = build_standin(Hello(), expected_key=SENTINEL)
    upstream_app = HoldsTheEnd(standin.app)
    received = bytearray()
    async with serve(upstream_app) as upstream:
        gateway = Gateway(settings.town_dir, upstream)
        try:
            await gateway.started(key)
            async with httpx2.AsyncClient(timeout=WAIT_S) as http, anyio.create_task_group() as tg:

                async def ask() -> None:
                    body = {**MSG, "stream": True}
                    with pytest.raises(httpx2.HTTPError):  # the gateway dies under it
                        async with http.stream(
                            "POST", gateway.url + "/v1/messages", json=body, headers={"x-api-key": key}
                        ) as r:
                            async for chunk in r.aiter_raw():
                                received.extend(chunk)

                tg.start_soon(ask)
                with anyio.fail_after(WAIT_S):
                    while b"event: message_delta" not in received:  # the whole text, and its usage
                        await anyio.sleep(0.01)
                gateway.kill()  # before `message_stop`, and so before the usage row
        finally:
            upstream_app.release.set()
            if gateway.proc.is_alive():
                gateway.kill()
        assert _text(bytes(received)) == "Hello from the scripted stand-in." and STOP not in received
        assert store.db.query("SELECT * FROM usage") == []
        [left] = budgets.show("town")
        assert left.reserved_tokens > 0 and left.tokens_spent == 0

        restarted = Gateway(settings.town_dir, upstream)
        try:
            await restarted.started(key)
        finally:
            restarted.kill()
    [reported] = [r.usage for r in standin.requests if r.path == "/v1/messages" and r.usage is not None]
    [row] = store.db.query("SELECT * FROM usage")
    tokens = row["input_tokens"] + row["output_tokens"] + row["cache_creation_tokens"] + row["cache_read_tokens"]
    assert row["agent"] == "polecat-1" and row["outcome"] == "abandoned" and row["cost_usd"] > 0
    assert "the gateway stopped before this request's usage was recorded" in row["error"]
    assert tokens == left.reserved_tokens >= reported["input_tokens"] + reported["output_tokens"]
    [town] = budgets.show("town")
    assert (town.tokens_spent, town.reserved_tokens) == (tokens, 0)
