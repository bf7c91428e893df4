"""Budgets and usage on a real SQLite town: limits, reserve-then-settle, the overspend bound, prices, routes."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gastown_mcp.config import load_settings
from gastown_mcp.errors import BudgetExceeded, InvalidInput
from gastown_mcp.models import Verb
from gastown_mcp.store import Store
from gastown_mcp.town.budgets import (
    BudgetBusy,
    Budgets,
    Estimate,
    Price,
    PriceTable,
    Route,
    Routes,
    Usage,
    WriteLockTaken,
)


def test_the_standin_is_priced_like_a_sonnet_class_model() -> None:
    prices = PriceTable()
    assert prices.price("scripted-standin") == prices.price("claude-sonnet-4-5") == Price(input=3, output=15)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_creation_tokens=1_000_000,
                  cache_read_tokens=1_000_000)  # fmt: skip
    assert prices.cost("scripted-standin", usage) == pytest.approx(3 + 15 + 3.75 + 0.30)


def test_price_overrides_win_over_the_defaults() -> None:
    prices = PriceTable({"llama*": Price(input=0, output=0)})
    assert prices.cost("llama3.3", Usage(input_tokens=10_000, output_tokens=10_000)) == 0
    assert prices.price("claude-opus-4-1") == Price(input=15, output=75)
    assert prices.price("claude-opus-4-5-20251101") == Price(input=5, output=25)
    assert prices.price("claude-haiku-4-5") == Price(input=1, output=5)


def test_an_estimate_is_an_upper_bound_in_tokens_and_dollars() -> None:
    est = PriceTable().estimate("scripted-standin", 1000, 500)
    assert est.tokens == 1500
    assert est.usd == pytest.approx((1000 * 3.75 + 500 * 15) / 1e6)


def test_a_budget_shows_its_limits_spend_and_remaining(store: Store) -> None:
    budgets = Budgets(store)
    status = budgets.set("overseer", "agent", "polecat-1", tokens=1000, usd=1.5)
    assert (status.token_limit, status.usd_limit, status.tokens_remaining, status.exhausted) == (1000, 1.5, 1000, False)
    res = budgets.reserve("polecat-1", "web", "scripted-standin", Estimate(tokens=10, usd=0.01))
    budgets.settle(res, Usage(input_tokens=100, output_tokens=50))
    [shown] = budgets.show("agent", "polecat-1")
    assert shown.tokens_spent == 150 and shown.tokens_remaining == 850
    assert shown.usd_spent == pytest.approx((100 * 3 + 50 * 15) / 1e6)


def test_a_budget_set_late_counts_what_was_already_spent(store: Store) -> None:
    budgets = Budgets(store)
    res = budgets.reserve("polecat-1", "web", "scripted-standin", Estimate(tokens=10, usd=0))
    assert res.id is not None  # no budget applies, but the admission write still happens
    budgets.settle(res, Usage(input_tokens=70, output_tokens=30))
    assert budgets.set("overseer", "rig", "web", tokens=500).tokens_spent == 100
    assert budgets.set("overseer", "town", tokens=500).tokens_spent == 100
    assert budgets.set("overseer", "rig", "other", tokens=500).tokens_spent == 0


def test_an_agent_spends_from_its_own_its_rigs_and_the_towns_budget(store: Store) -> None:
    budgets = Budgets(store)
    for scope, name in (("agent", "polecat-1"), ("rig", "web"), ("town", None)):
        budgets.set("overseer", scope, name, tokens=10_000)
    res = budgets.reserve("polecat-1", "web", "scripted-standin", Estimate(tokens=10, usd=0))
    budgets.settle(res, Usage(input_tokens=40, output_tokens=2))
    assert [b.tokens_spent for b in budgets.applying_to("polecat-1", "web")] == [42, 42, 42]


def test_a_spent_budget_refuses_and_fires_one_exhaustion_event(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "town", tokens=100)
    res = budgets.reserve("polecat-1", None, "scripted-standin", Estimate(tokens=500, usd=0))
    budgets.settle(res, Usage(input_tokens=90, output_tokens=20))
    for _ in range(3):
        with pytest.raises(BudgetExceeded, match=r"the town budget is spent .*gastown budget set"):
            budgets.reserve("polecat-2", None, "scripted-standin", Estimate(tokens=1, usd=0))
    events = store.db.query("SELECT * FROM events WHERE verb=?", (Verb.budget_exhausted,))
    assert len(events) == 1 and json.loads(events[0]["after"])["tokens_spent"] == 110
    assert budgets.show("town")[0].exhausted


def test_raising_a_spent_budget_reopens_it(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "agent", "a", usd=0.0)
    with pytest.raises(BudgetExceeded):
        budgets.reserve("a", None, "m", Estimate(tokens=1, usd=0))
    budgets.set("overseer", "agent", "a", usd=1.0)
    assert budgets.reserve("a", None, "m", Estimate(tokens=1, usd=0)).id is not None


def test_a_fully_reserved_budget_is_busy_not_spent(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "agent", "a", tokens=100)
    held = budgets.reserve("a", None, "m", Estimate(tokens=100, usd=0))
    with pytest.raises(BudgetBusy, match="fully reserved"):
        budgets.reserve("a", None, "m", Estimate(tokens=1, usd=0))
    budgets.settle(held, Usage(input_tokens=10))
    assert budgets.reserve("a", None, "m", Estimate(tokens=1, usd=0)).id is not None


def test_bad_budget_input_is_refused_with_a_hint(store: Store) -> None:
    budgets = Budgets(store)
    with pytest.raises(InvalidInput, match="token limit, a USD limit"):
        budgets.set("overseer", "agent", "a")
    with pytest.raises(InvalidInput, match="agent, rig or town"):
        budgets.set("overseer", "planet", "a", tokens=1)
    with pytest.raises(InvalidInput, match="needs the rig's name"):
        budgets.set("overseer", "rig", None, tokens=1)


def test_stale_reservations_are_released(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "agent", "a", tokens=100)
    budgets.reserve("a", None, "m", Estimate(tokens=100, usd=0))
    assert budgets.release_stale(older_than_seconds=-1) == 1
    assert budgets.reserve("a", None, "m", Estimate(tokens=1, usd=0)).id is not None


def test_a_budget_shows_what_requests_in_flight_have_reserved(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "rig", "web", tokens=1000)
    held = budgets.reserve("a", "web", "scripted-standin", Estimate(tokens=300, usd=0.25), owner="gw-1")
    [shown] = budgets.show("rig", "web")
    assert (shown.reserved_tokens, shown.reserved_usd, shown.tokens_spent) == (300, 0.25, 0)
    budgets.settle(held, Usage(output_tokens=20))
    [shown] = budgets.show("rig", "web")
    assert (shown.reserved_tokens, shown.reserved_usd, shown.tokens_spent) == (0, 0, 20)


def test_a_gateway_start_charges_every_reservation_another_instance_made_in_full(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "agent", "a", tokens=100)
    budgets.reserve("a", None, "m", Estimate(tokens=60, usd=0.5), owner="gw-dead")
    budgets.reserve("a", None, "m", Estimate(tokens=30, usd=0.25))  # from before owners were recorded
    mine = budgets.reserve("a", None, "m", Estimate(tokens=5, usd=0), owner="gw-live")
    charged = budgets.settle_leftovers("gw-live")
    assert [(r.agent, r.tokens, r.cost_usd, r.outcome) for r in charged] == [
        ("a", 60, 0.5, "abandoned"),
        ("a", 30, 0.25, "abandoned"),
    ]
    [shown] = budgets.show("agent", "a")
    assert (shown.reserved_tokens, shown.tokens_spent, shown.usd_spent, shown.exhausted) == (5, 90, 0.75, False)
    assert budgets.usage("a")[0].requests == 2
    assert budgets.settle_leftovers("gw-live") == []
    budgets.settle(mine, Usage())


def test_usage_summarises_requests_tokens_dollars_and_remaining_per_agent(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "agent", "a", tokens=1000)
    budgets.set("overseer", "town", tokens=500)
    for usage in (Usage(input_tokens=10, output_tokens=5, cache_read_tokens=100), Usage(cache_creation_tokens=50)):
        budgets.settle(budgets.reserve("a", "web", "scripted-standin", Estimate(tokens=1, usd=0)), usage)
    budgets.refused("a", "web", "scripted-standin", 402)
    budgets.settle(budgets.reserve("b", None, "scripted-standin", Estimate(tokens=1, usd=0)), Usage(output_tokens=7))
    a, b = budgets.usage()
    assert (a.agent, a.requests, a.refused, a.input_tokens, a.cache_read_tokens, a.cache_creation_tokens) == (
        "a", 3, 1, 10, 100, 50,
    )  # fmt: skip
    assert a.tokens_remaining == 500 - 172 and b.tokens_remaining == 500 - 172
    assert a.cost_usd == pytest.approx((10 * 3 + 5 * 15 + 100 * 0.3 + 50 * 3.75) / 1e6)
    assert budgets.usage("b")[0].output_tokens == 7


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(min_value=0, max_value=2000),
    plan=st.lists(st.tuples(st.integers(1, 400), st.floats(0, 1), st.booleans()), min_size=1, max_size=60),
)
def test_any_interleaving_overspends_by_less_than_the_largest_reservation(
    tmp_path_factory: pytest.TempPathFactory, limit: int, plan: list[tuple[int, float, bool]]
) -> None:
    store = Store(load_settings(tmp_path_factory.mktemp("town"), env={}))
    try:
        budgets = Budgets(store)
        budgets.set("overseer", "rig", "web", tokens=limit)
        in_flight: list[tuple[Any, int]] = []
        for estimate, used_share, settle_one in plan:
            if settle_one and in_flight:
                res, actual = in_flight.pop(0)
                budgets.settle(res, Usage(output_tokens=actual))
            try:
                res = budgets.reserve("a", "web", "m", Estimate(tokens=estimate, usd=0))
            except BudgetExceeded:
                continue
            in_flight.append((res, int(estimate * used_share)))  # actual use never exceeds the reservation
        for res, actual in in_flight:
            budgets.settle(res, Usage(output_tokens=actual))
        spent = budgets.show("rig", "web")[0].tokens_spent
        assert spent < limit + max(e for e, _, _ in plan) or spent == 0
    finally:
        store.close()


def test_routes_pick_the_most_specific_rule(store: Store) -> None:
    routes = Routes(store)
    routes.set("mayor", Route(upstream="anthropic"))
    routes.set("mayor", Route(model="claude-haiku*", upstream="local"))
    routes.set("mayor", Route(agent="polecat-7", upstream="big"))
    assert routes.pick("polecat-7", "claude-haiku-4-5") == "big"
    assert routes.pick("polecat-1", "claude-haiku-4-5") == "local"
    assert routes.pick("polecat-1", "claude-opus-4-5") == "anthropic"
    assert routes.clear("mayor", agent="polecat-7") and routes.pick("polecat-7", "x") == "anthropic"


def test_a_reserve_that_must_not_wait_changes_nothing_while_another_writer_holds_the_lock(store: Store) -> None:
    budgets = Budgets(store)
    budgets.set("overseer", "town", tokens=1000)
    other = sqlite3.connect(store.settings.db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process mid-write
    try:
        with pytest.raises(WriteLockTaken):
            budgets.reserve("a", None, "m", Estimate(tokens=10, usd=0), sync=False, wait=False)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert budgets.show("town")[0].reserved_tokens == 0
    held = budgets.reserve("a", None, "m", Estimate(tokens=10, usd=0), sync=False, wait=False)
    assert budgets.show("town")[0].reserved_tokens == 10
    budgets.sync()  # the journal line is on disk: a restore would have it
    budgets.settle(held, Usage(output_tokens=3), sync=False, wait=False)
    budgets.sync()
    assert budgets.show("town")[0].tokens_spent == 3
