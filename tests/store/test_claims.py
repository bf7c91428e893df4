"""The ready queue, claims as compare-and-swap, leases, renewals and takeovers of expired leases.

Leases are made to expire by claiming with a negative `lease_seconds`, so no test waits for a clock; the one
test of the renewal throttle polls against a deadline with a very short lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from waits import until

from gastown_mcp.config import Settings
from gastown_mcp.errors import Conflict, InvalidTransition, NotFound
from gastown_mcp.models import Agent, BeadResult, BeadStatus, Verb
from gastown_mcp.store import Store
from gastown_mcp.store.db import now_iso
from gastown_mcp.town import Town


def ready_ids(store: Store, **kw: object) -> list[str]:
    return [s.id for s in store.beads.ready(**kw)]  # type: ignore[arg-type]


def lease_of(store: Store, bead_id: str) -> str:
    lease = store.beads.get(bead_id).lease_expires_at
    assert lease is not None
    return lease


# -- the ready queue -------------------------------------------------------------------------------
def test_ready_is_ordered_by_priority_then_age(store: Store) -> None:
    made = [store.beads.create("mayor", title=f"{p}-{i}", priority=p) for i, p in enumerate([3, 1, 2, 1, 0, 3])]
    expected = [b.id for b in sorted(made, key=lambda b: (b.priority, b.created_at))]
    assert ready_ids(store) == expected
    assert ready_ids(store, limit=2) == expected[:2]
    assert store.beads.ready_count() == 6


def test_ready_leaves_out_claimed_blocked_done_and_cancelled_beads(store: Store) -> None:
    ready = store.beads.create("mayor", title="ready")
    claimed = store.beads.create("mayor", title="claimed")
    store.beads.claim("polecat-1", claimed.id, 600)
    blocked = store.beads.create("mayor", title="blocked")
    store.beads.transition("mayor", blocked.id, BeadStatus.blocked, "needs a key", None)
    cancelled = store.beads.create("mayor", title="cancelled")
    store.beads.transition("mayor", cancelled.id, BeadStatus.cancelled, "", None)
    done = store.beads.create("mayor", title="done")
    store.beads.claim("polecat-1", done.id, 600)
    store.beads.complete("polecat-1", done.id, BeadResult(summary="s"), None)
    waiting = store.beads.create("mayor", title="waits on ready", deps=[("blocks", ready.id)])
    assert ready_ids(store) == [ready.id]
    assert store.beads.ready_count() == 1
    assert waiting.blocked_by == [ready.id]


def test_ready_includes_a_claimed_bead_once_its_lease_has_run_out(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, 60)
    assert ready_ids(store) == []
    # A fixed clock two minutes ahead sees the lease as expired.
    later = now_iso(time.time() + 120)
    assert ready_ids(store, now=later) == [bead.id]


def test_ready_on_an_empty_town_is_empty(store: Store) -> None:
    assert store.beads.ready() == [] and store.beads.ready_count() == 0


# -- claims ----------------------------------------------------------------------------------------
def test_claiming_a_bead_by_id_sets_the_holder_and_a_lease(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    start = time.time()
    claimed = store.beads.claim("polecat-1", bead.id, 90)
    assert (claimed.status, claimed.assignee, claimed.attempts) == ("in_progress", "polecat-1", 0)
    assert now_iso(start + 89) < lease_of(store, bead.id) <= now_iso(time.time() + 90)
    (event,) = [e for e in store.events.since(bead_id=bead.id) if e.verb == Verb.bead_claimed]
    assert event.actor == event.agent == "polecat-1"
    assert event.before == {"status": "open", "assignee": None, "lease_expires_at": None}
    assert event.after == {
        "status": "in_progress",
        "assignee": "polecat-1",
        "lease_expires_at": claimed.lease_expires_at,
    }


def test_claiming_without_an_id_takes_the_top_ready_bead(store: Store) -> None:
    low = store.beads.create("mayor", title="low", priority=3)
    high = store.beads.create("mayor", title="high", priority=0)
    assert store.beads.claim("polecat-1", None, 600).id == high.id
    assert store.beads.claim("polecat-2", None, 600).id == low.id
    with pytest.raises(NotFound, match="no ready beads right now"):
        store.beads.claim("polecat-3", None, 600)


def test_the_loser_of_a_claim_is_told_who_holds_the_bead(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, 600)
    events = len(store.events.since())
    with pytest.raises(
        Conflict, match=rf"bead {bead.id} is claimed by polecat-1 until \d\d:\d\d:\d\d UTC; pick another"
    ):
        store.beads.claim("polecat-2", bead.id, 600)
    assert store.beads.get(bead.id).assignee == "polecat-1"
    assert len(store.events.since()) == events


def test_a_bead_waiting_on_an_open_blocker_cannot_be_claimed(store: Store) -> None:
    blocker = store.beads.create("mayor", title="first")
    bead = store.beads.create("mayor", title="second", deps=[("blocks", blocker.id)])
    with pytest.raises(Conflict, match=f"bead {bead.id} waits on {blocker.id}"):
        store.beads.claim("polecat-1", bead.id, 600)
    assert store.beads.get(bead.id).status is BeadStatus.open


@pytest.mark.parametrize("status", [BeadStatus.blocked, BeadStatus.cancelled])
def test_a_bead_that_is_not_open_cannot_be_claimed(store: Store, status: BeadStatus) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.transition("mayor", bead.id, status, "why", None)
    with pytest.raises(InvalidTransition, match=f"is {status.value}, not open"):
        store.beads.claim("polecat-1", bead.id, 600)


def test_the_holder_claiming_again_renews_the_lease_without_a_new_event(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, 5)
    short = lease_of(store, bead.id)
    renewed = store.beads.claim("polecat-1", bead.id, 600)
    assert renewed.assignee == "polecat-1" and renewed.attempts == 0
    assert lease_of(store, bead.id) > now_iso(time.time() + 500) > short
    assert [e.verb for e in store.events.since(bead_id=bead.id)] == [Verb.bead_created, Verb.bead_claimed]


def test_an_expired_lease_lets_another_agent_take_the_bead_over(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, -1)  # a lease that ran out a second ago
    taken = store.beads.claim("polecat-2", bead.id, 600)
    assert (taken.status, taken.assignee, taken.attempts) == ("in_progress", "polecat-2", 1)
    event = store.events.since(bead_id=bead.id)[-1]
    assert event.verb == Verb.bead_taken_over and event.actor == "polecat-2"
    assert event.before is not None and event.before["assignee"] == "polecat-1"
    assert event.after is not None and event.after["assignee"] == "polecat-2"


def test_claiming_without_an_id_takes_over_an_expired_lease_of_higher_priority(store: Store) -> None:
    stale = store.beads.create("mayor", title="stale", priority=0)
    fresh = store.beads.create("mayor", title="fresh", priority=2)
    store.beads.claim("polecat-1", stale.id, -1)
    assert ready_ids(store) == [stale.id, fresh.id]
    taken = store.beads.claim("polecat-2", None, 600)
    assert (taken.id, taken.assignee, taken.attempts) == (stale.id, "polecat-2", 1)
    assert store.beads.claim("polecat-3", None, 600).id == fresh.id


def test_the_old_holder_cannot_complete_a_bead_taken_over_from_it(store: Store) -> None:
    from gastown_mcp.errors import Forbidden

    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, -1)
    store.beads.claim("polecat-2", bead.id, 600)
    with pytest.raises(Forbidden, match=f"polecat-1 may not complete {bead.id}: it is claimed by polecat-2"):
        store.beads.complete("polecat-1", bead.id, BeadResult(summary="late"), "polecat-1")


# -- renewals through the town ---------------------------------------------------------------------
CALLS = {
    "bead_show": lambda town, a, bid: town.bead_show(a, bid),
    "bead_ready": lambda town, a, bid: town.bead_ready(a),
    "bead_list": lambda town, a, bid: town.bead_list(a),
    "bead_comment": lambda town, a, bid: town.bead_comment(a, bid, "progress"),
    "bead_update": lambda town, a, bid: town.bead_update(a, bid, notes="halfway"),
    "bead_create": lambda town, a, bid: town.bead_create(a, "side work"),
    "inbox": lambda town, a, bid: town.inbox(a),
    "heartbeat": lambda town, a, bid: town.heartbeat(a),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_any_town_call_by_the_holder_renews_its_lease(
    store: Store, settings: Settings, add_agent: Callable[..., Agent], call: object
) -> None:
    polecat = add_agent("polecat-1", "polecat")
    bead = store.beads.create("mayor", title="t")
    store.beads.claim(polecat.name, bead.id, 5)
    fresh_town = Town(store, settings)  # its renewal throttle has not seen polecat-1 yet
    call(fresh_town, polecat, bead.id)  # type: ignore[operator]
    assert lease_of(store, bead.id) > now_iso(time.time() + settings.lease.seconds - 60)
    assert store.agents.get(polecat.name).last_seen is not None


def test_renewals_are_throttled_per_agent_then_resume(
    store: Store, add_agent: Callable[..., Agent], town_with_lease: Callable[[float], Town]
) -> None:
    polecat = add_agent("polecat-1")
    bead = store.beads.create("mayor", title="t")
    # Lease 600 s: the throttle is 5 s, so a second call right away does not write.
    slow = town_with_lease(600)
    store.beads.claim(polecat.name, bead.id, 5)
    slow.bead_show(polecat, bead.id)
    assert lease_of(store, bead.id) > now_iso(time.time() + 500)
    store.beads.claim(polecat.name, bead.id, 5)  # shorten it again
    short = lease_of(store, bead.id)
    slow.bead_show(polecat, bead.id)
    assert lease_of(store, bead.id) == short
    # Lease 0.2 s: the throttle is 10 ms, so a call shortly after renews again.
    quick = town_with_lease(0.2)
    quick.bead_show(polecat, bead.id)
    first = lease_of(store, bead.id)

    def renewed() -> bool:
        quick.bead_show(polecat, bead.id)
        return lease_of(store, bead.id) != first

    until(renewed, 5, "the lease to be renewed again", every_s=0.005)
    assert lease_of(store, bead.id) > first


def test_a_claim_through_the_town_uses_the_configured_lease(
    operator: Agent, add_agent: Callable[..., Agent], town_with_lease: Callable[[float], Town]
) -> None:
    town = town_with_lease(42)
    polecat = add_agent("polecat-1")
    bead = town.bead_create(operator, "t")
    start = time.time()
    claimed = town.bead_claim(polecat, bead.id)
    assert now_iso(start + 41) < lease_of(town._store, claimed.id) <= now_iso(time.time() + 42)


def test_ready_ranks_expired_leases_by_priority_even_past_the_limit(store: Store) -> None:
    beads = [store.beads.create("mayor", title=f"p{p}", priority=p) for p in (4, 3, 2, 1, 0)]
    for bead in beads:  # the lowest priority expires first
        store.beads.claim("polecat-1", bead.id, -1)
    assert ready_ids(store, limit=1) == [beads[-1].id]
    assert ready_ids(store, limit=5) == [b.id for b in reversed(beads)]
