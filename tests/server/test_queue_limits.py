"""Queue abuse by one polecat, through the MCP client: one bead at a time, nobody else's hook, and limits on
the side work it creates (rate, priority, size) from `[limits]`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio
from mcp import Client

from gastown_mcp.config import LimitsSection
from gastown_mcp.models import Agent, AgentState
from gastown_mcp.server import build_server
from gastown_mcp.server.client import result_text
from gastown_mcp.store import Store
from gastown_mcp.town import Town

Connect = Callable[[Agent], AbstractAsyncContextManager[Client]]


def running(store: Store, operator: Agent, name: str) -> None:
    store.agents.set_state(operator.name, name, AgentState.running, "started")


async def test_a_polecat_holds_one_bead_at_a_time(
    connect: Connect, crew: dict[str, Agent], town: Town, operator: Agent
) -> None:
    ids = [town.bead_create(operator, f"job {i}").id for i in range(3)]
    async with connect(crew["polecat-1"]) as c:
        with anyio.fail_after(10):
            first = await c.call_tool("bead_claim", {"id": ids[0]})
            again = await c.call_tool("bead_claim", {"id": ids[0]})  # renewing what it holds is fine
            second = await c.call_tool("bead_claim", {"id": ids[1]})
            top = await c.call_tool("bead_claim", {})
    assert not first.is_error and not again.is_error, result_text(first)
    assert second.is_error and top.is_error
    assert f"polecat-1 already holds {ids[0]}" in result_text(second)
    assert "bead_complete" in result_text(second) and "bead_release" in result_text(second)
    assert [b.id for b in town._store.beads.held_by("polecat-1")] == [ids[0]]


async def test_a_polecat_with_a_hook_claims_only_its_hook_and_never_a_bead_on_another_agents_hook(
    connect: Connect, crew: dict[str, Agent], town: Town, store: Store, operator: Agent
) -> None:
    mine, theirs, loose = (town.bead_create(operator, title).id for title in ("mine", "theirs", "loose"))
    for name in ("polecat-1", "polecat-2"):
        running(store, operator, name)
    town.sling(operator, mine, "polecat-1")
    town.sling(operator, theirs, "polecat-2")
    town.bead_release(crew["polecat-2"], theirs, "back to the queue, still on polecat-2's hook")
    async with connect(crew["polecat-1"]) as c, connect(crew["polecat-2"]) as other:
        with anyio.fail_after(10):
            assert not (await c.call_tool("bead_release", {"id": mine, "reason": "try others"})).is_error
            hooked = await c.call_tool("bead_claim", {"id": theirs})
            loose_claim = await c.call_tool("bead_claim", {"id": loose})
            own = await c.call_tool("bead_claim", {})  # no id: its hook
            back = await other.call_tool("bead_claim", {"id": theirs})
    assert hooked.is_error and f"{theirs} is on polecat-2's hook" in result_text(hooked)
    assert loose_claim.is_error and f"works only {mine}, the bead on its hook" in result_text(loose_claim)
    assert not own.is_error and own.structured_content["id"] == mine  # type: ignore[index]
    assert not back.is_error, result_text(back)


async def test_a_hookless_polecat_taking_the_top_bead_skips_beads_on_other_hooks(
    connect: Connect, crew: dict[str, Agent], town: Town, store: Store, operator: Agent
) -> None:
    reserved = town.bead_create(operator, "reserved", priority=0).id
    free = town.bead_create(operator, "free", priority=3).id
    running(store, operator, "polecat-2")
    town.sling(operator, reserved, "polecat-2")
    town.bead_release(crew["polecat-2"], reserved, "stepping away")
    async with connect(crew["polecat-1"]) as c:
        with anyio.fail_after(10):
            got = await c.call_tool("bead_claim", {})
    assert not got.is_error and got.structured_content["id"] == free  # type: ignore[index]


async def test_side_work_from_a_polecat_is_limited_in_rate_priority_and_size(
    crew: dict[str, Agent], town: Town, store: Store, operator: Agent, mode: str
) -> None:
    limited = Town(store, town.settings.model_copy(update={"limits": LimitsSection(polecat_creates_per_hour=3)}))
    work = limited.bead_create(operator, "the polecat's bead", priority=2).id
    limited.bead_claim(crew["polecat-1"], work)
    async with Client(build_server(limited, crew["polecat-1"]), mode=mode) as c:  # type: ignore[arg-type]
        with anyio.fail_after(10):
            urgent = await c.call_tool("bead_create", {"title": "drop everything", "priority": 0})
            huge = await c.call_tool("bead_create", {"title": "big", "description": "x" * 20_000})
            made = [await c.call_tool("bead_create", {"title": f"side {i}", "priority": 3}) for i in range(4)]
    assert urgent.is_error and "priority 2 or lower (a larger number)" in result_text(urgent)
    assert huge.is_error and "polecat_bead_chars" in result_text(huge)
    assert [r.is_error for r in made] == [False, False, False, True]
    assert "3 beads in the last hour" in result_text(made[3]) and "town_mail_send" in result_text(made[3])
    created = [b for b in store.beads.search(limit=100) if b.id != work]
    assert len(created) == 3
