"""The gateway's per-request reads (key → agent, emergency stop, route) are kept between requests and dropped
the moment the store changes: through the real client against a gateway whose cache is warm, with every change
made by a second store on the same file (another process's connections), and unit-level, counting reads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anthropic
import pytest

from gastown_mcp.gateway import GatewayConfig, Upstream, build_gateway
from gastown_mcp.models import Agent, Role, Verb
from gastown_mcp.serving import serve
from gastown_mcp.standin import Echo, Hello, build_standin
from gastown_mcp.store import Store
from gastown_mcp.town import Town
from gastown_mcp.town.budgets import Estimate, Routes, Usage
from gastown_mcp.town.budgets import Route as RouteRow
from gastown_mcp.town.gatereads import GatewayReads

SENTINEL = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"
ASK: dict[str, Any] = {"model": "scripted-standin", "max_tokens": 10, "messages": [{"role": "user", "content": "a"}]}


async def test_a_warm_gateway_sees_a_stop_a_route_and_a_revocation_made_elsewhere_on_its_next_request(
    store: Store,
) -> None:
    key = store.agents.create("test", "polecat-1", Role.polecat, rig="web").gateway_key
    other = Store(store.settings)  # its own connections: what the CLI or another process would use
    remote, local = build_standin(Hello(), expected_key=SENTINEL), build_standin(Echo())
    try:
        async with serve(remote.app) as remote_url, serve(local.app) as local_url:
            cfg = GatewayConfig(
                upstreams={
                    "anthropic": Upstream(base_url=remote_url),
                    "local": Upstream(base_url=local_url, key_env=None),
                },
                default_upstream="anthropic",
            )
            domain = Town(store, store.settings.model_copy(update={"gateway": cfg}))
            async with serve(build_gateway(domain, {"ANTHROPIC_API_KEY": SENTINEL})) as url:
                client = anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0)
                for _ in range(3):  # warm: key, stop and route kept
                    await client.messages.create(**ASK)
                assert len(remote.requests) == 3

                other.health.set("operator", "estop", {"by": "operator", "reason": "drill"}, Verb.town_estopped)
                with pytest.raises(anthropic.APIStatusError) as err:
                    await client.messages.create(**ASK)
                assert err.value.status_code == 503 and "emergency stop" in str(err.value)
                other.health.clear("operator", "estop", Verb.town_thawed)
                await client.messages.create(**ASK)
                assert len(remote.requests) == 4

                Routes(other).set("operator", RouteRow(agent="polecat-*", model="scripted-*", upstream="local"))
                routed = await client.messages.create(**ASK)
                assert routed.content[0].type == "text" and routed.content[0].text == "echo: a"
                assert len(remote.requests) == 4 and len(local.requests) == 1

                other.agents.revoke("operator", "polecat-1")
                with pytest.raises(anthropic.AuthenticationError):
                    await client.messages.create(**ASK)
        assert len(remote.requests) == 4 and len(local.requests) == 1
    finally:
        other.close()


class Counting:
    def __init__(self, store: Store) -> None:
        self.store, self.reads = store, 0

    def agent(self, key: str) -> Agent:
        self.reads += 1
        found = self.store.agents.by_gateway_key(key)
        assert found is not None
        return found


def test_the_gateways_own_writes_keep_the_cache_and_any_other_write_drops_it(store: Store, tmp_path: Path) -> None:
    key = store.agents.create("test", "polecat-1", Role.polecat, rig="web").gateway_key
    counting = Counting(store)
    reads = GatewayReads(store.db, counting.agent, lambda: None, lambda agent, model: "anthropic")
    town = Town(store, store.settings)
    budgets = town.budgets
    estimate = Estimate(tokens=100, usd=0.01)

    assert reads.agent(key).name == "polecat-1" and reads.agent(key).name == "polecat-1"
    assert counting.reads == 1

    for _ in range(3):  # reserve + settle on the no-wait connection, re-blessed as the gateway does
        mark = reads.mark()
        held = budgets.reserve("polecat-1", "web", "scripted-standin", estimate, owner="gw", sync=False, wait=False)
        reads.wrote(mark)
        mark = reads.mark()
        budgets.settle(held, Usage(input_tokens=3, output_tokens=4), sync=False, wait=False)
        reads.wrote(mark)
        reads.agent(key)
    assert counting.reads == 1

    # The same write not re-blessed (made by anything else on that connection) drops the cache.
    budgets.refused("polecat-1", "web", "scripted-standin", 429, sync=False, wait=False)
    reads.agent(key)
    assert counting.reads == 2

    # A write on this thread's ordinary connection, or another thread's, or another store's: dropped each time.
    store.agents.set_state("operator", "polecat-1", store.agents.get("polecat-1").state, reason="touch")
    reads.agent(key)
    assert counting.reads == 3
    worker = threading.Thread(target=lambda: budgets.set("operator", "town", tokens=10**9))
    worker.start()
    worker.join()
    reads.agent(key)
    assert counting.reads == 4
    other = Store(store.settings)
    try:
        other.agents.revoke("operator", "polecat-1")
    finally:
        other.close()
    with pytest.raises(AssertionError):  # the counting reader finds no agent for a revoked key
        reads.agent(key)
    assert counting.reads == 5


def test_one_check_a_request_made_with_its_key_serves_its_admission(store: Store) -> None:
    """`admission` reads as of the latest check on its thread (its request's `agent` call): one `PRAGMA
    data_version` a request. A stop set after that check is seen by the next request's, not missed."""
    key = store.agents.create("test", "polecat-1", Role.polecat, rig="web").gateway_key
    stop: list[dict[str, Any] | None] = [None]
    reads = GatewayReads(store.db, Counting(store).agent, lambda: stop[0], lambda agent, model: "anthropic")
    checks: list[str] = []
    store.db._nowait_conn().set_trace_callback(lambda sql: checks.append(sql) if "data_version" in sql else None)
    for _ in range(3):
        assert reads.agent(key).name == "polecat-1"
        assert reads.admission("polecat-1", "scripted-standin") == (None, "anthropic")
    assert len(checks) == 3

    reads.agent(key)
    other = Store(store.settings)
    try:
        stop[0] = {"by": "operator", "reason": "drill"}
        other.health.set("operator", "estop", stop[0], Verb.town_estopped)  # another process's commit
    finally:
        other.close()
    assert reads.admission("polecat-1", "scripted-standin") == (None, "anthropic")  # checked before the stop
    reads.agent(key)
    assert reads.admission("polecat-1", "scripted-standin") == (stop[0], "anthropic")
