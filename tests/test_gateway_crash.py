"""A finished response is always metered, even when the gateway dies between the response's last byte and its
usage row: the reservation written before the request is forwarded is settled by the next gateway's start.

The gateway runs as a process of its own (the real app, uvicorn, the town's SQLite file) so it can be killed
with SIGKILL. The "crash window" is made by holding the database's write lock from here while the response
passes: the usage row cannot be written, the client still gets every byte, and then the gateway is killed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
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


class Held:
    """Wraps the real stand-in: each `/v1/messages` request waits for `release` once it has `arrived`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.arrived, self.release = anyio.Event(), anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/messages":
            self.arrived.set()
            await self.release.wait()
        await self.app(scope, receive, send)


async def _whole(http: httpx2.AsyncClient, url: str, key: str, body: dict[str, Any]) -> httpx2.Response:
    async with http.stream("POST", url + "/v1/messages", json=body, headers={"x-api-key": key}) as r:
        await r.aread()
    return r


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_response_received_whole_is_metered_though_the_gateway_died_before_its_usage_row(
    store: Store, settings: Settings, stream: bool
) -> None:
    key = store.agents.create("test", "polecat-1", Role.polecat, rig="web").gateway_key
    budgets = Budgets(store)
    budgets.set("operator", "town", tokens=1_000_000)
    standin = build_standin(Hello(), expected_key=SENTINEL)
    held = Held(standin.app)
    locker = sqlite3.connect(settings.db_path, isolation_level=None, timeout=WAIT_S)
    async with serve(held) as upstream:
        gateway = Gateway(settings.town_dir, upstream)
        try:
            await gateway.started(key)
            async with httpx2.AsyncClient(timeout=WAIT_S) as http, anyio.create_task_group() as tg:
                got: list[httpx2.Response] = []

                async def ask() -> None:
                    got.append(await _whole(http, gateway.url, key, {**MSG, "stream": stream}))

                tg.start_soon(ask)
                with anyio.fail_after(WAIT_S):
                    await held.arrived.wait()  # admitted: its reservation is written, the request forwarded
                locker.execute("BEGIN IMMEDIATE")  # from here on the gateway cannot write a usage row
                held.release.set()
            [r] = got
            assert r.status_code == 200, r.text
            if stream:
                assert b"event: message_stop" in r.content and b"event: error" not in r.content
            else:
                assert json.loads(r.content)["usage"]["output_tokens"] > 0
        finally:
            gateway.kill()  # between the response's last byte and its usage row
            if locker.in_transaction:
                locker.execute("ROLLBACK")
            locker.close()
        assert store.db.query("SELECT * FROM usage WHERE outcome != 'refused'") == []
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
