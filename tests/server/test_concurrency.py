"""16 polecats over real MCP HTTP race through 300 beads: each bead claimed exactly once, none lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
from mcp import Client

from gastown_mcp.models import Agent
from gastown_mcp.server.client import connect_http, result_text
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town, operator

CLIENTS = 16
BEADS = 300


async def work_until_nothing_ready(client: Client, name: str, done: list[str]) -> None:
    while True:
        claim = await client.call_tool("bead_claim", {})
        if claim.is_error:
            assert "no ready beads" in result_text(claim), result_text(claim)
            return
        bead = claim.structured_content
        assert bead is not None and bead["assignee"] == name
        complete = await client.call_tool("bead_complete", {"id": bead["id"], "summary": f"{name} did it"})
        assert not complete.is_error, result_text(complete)
        done.append(bead["id"])


async def test_sixteen_http_clients_claim_every_bead_exactly_once(
    http_url: str, town: Town, store: Store, add_agent: Callable[..., Agent], credentials: dict[str, Credentials]
) -> None:
    op = operator()
    beads = {town.bead_create(op, f"bead {i}", priority=i % 5).id for i in range(BEADS)}
    names = [f"polecat-{i}" for i in range(CLIENTS)]
    for name in names:
        add_agent(name)
    done: dict[str, list[str]] = {name: [] for name in names}

    async def polecat(name: str) -> None:
        async with connect_http(http_url, credentials[name].token) as client:
            await work_until_nothing_ready(client, name, done[name])

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(polecat, name)

    completed = [b for ids in done.values() for b in ids]
    assert sorted(completed) == sorted(beads)  # none lost, none done twice
    assert sum(1 for ids in done.values() if ids) > 1  # the work really was shared
    claimed = Counter(r["bead_id"] for r in store.db.query("SELECT bead_id FROM events WHERE verb='bead.claimed'"))
    assert set(claimed) == beads and set(claimed.values()) == {1}
    assert store.db.query("SELECT 1 FROM events WHERE verb='bead.taken_over'") == []
    assert store.beads.counts() == {"done": BEADS}
    holders = {r["id"]: r["assignee"] for r in store.db.query("SELECT id, assignee FROM beads")}
    assert all(holders[b] == name for name, ids in done.items() for b in ids)
