"""Dependencies: cycles in `blocks` are refused, other kinds are free, and blockers drive the ready queue."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gastown_mcp.errors import InvalidInput, NotFound
from gastown_mcp.models import Agent, BeadResult, BeadStatus, DepKind, Verb
from gastown_mcp.store import Store
from gastown_mcp.town import Town


def snapshot(store: Store) -> tuple[list[tuple], list[tuple], int]:
    beads = [tuple(r) for r in store.db.query("SELECT id, status, open_blockers FROM beads ORDER BY id")]
    deps = [tuple(r) for r in store.db.query("SELECT bead_id, depends_on, kind FROM deps ORDER BY 1, 2, 3")]
    return beads, deps, store.events.last_id()


def ready_ids(store: Store) -> set[str]:
    return {s.id for s in store.beads.ready(limit=100)}


def finish(store: Store, bead_id: str) -> None:
    store.beads.claim("polecat-1", bead_id, 600)
    store.beads.complete("polecat-1", bead_id, BeadResult(summary="done"), None)


def test_a_direct_cycle_in_blocks_is_refused_and_nothing_changes(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b", deps=[("blocks", a.id)])
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=f"{b.id} already waits on {a.id}.*would be a cycle"):
        store.beads.link("mayor", a.id, b.id, DepKind.blocks)
    assert snapshot(store) == before


def test_a_transitive_cycle_in_blocks_is_refused_and_nothing_changes(store: Store) -> None:
    chain = [store.beads.create("mayor", title="0")]
    for i in range(1, 6):
        chain.append(store.beads.create("mayor", title=str(i), deps=[("blocks", chain[-1].id)]))
    before = snapshot(store)
    with pytest.raises(InvalidInput, match="would be a cycle"):
        store.beads.link("mayor", chain[0].id, chain[-1].id, DepKind.blocks)
    assert snapshot(store) == before


def test_a_bead_cannot_depend_on_itself(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    for kind in DepKind:
        with pytest.raises(InvalidInput, match="cannot depend on itself"):
            store.beads.link("mayor", a.id, a.id, kind)


def test_an_unknown_blocker_in_a_new_beads_deps_refuses_the_whole_create(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    before = snapshot(store)
    with pytest.raises(NotFound, match="no bead 'gt-missing'"):
        store.beads.create("mayor", title="b", labels=["x"], deps=[("blocks", a.id), ("blocks", "gt-missing")])
    assert snapshot(store) == before
    assert store.db.query_one("SELECT count(*) AS n FROM labels")["n"] == 0


@pytest.mark.parametrize("kind", [DepKind.parent, DepKind.related, DepKind.discovered_from])
def test_links_other_than_blocks_may_point_both_ways_and_do_not_block(store: Store, kind: DepKind) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b")
    store.beads.link("mayor", a.id, b.id, kind)
    store.beads.link("mayor", b.id, a.id, kind)
    assert ready_ids(store) == {a.id, b.id}
    assert {(d.bead_id, d.depends_on, d.kind) for d in store.beads.get(a.id).deps} == {
        (a.id, b.id, kind),
        (b.id, a.id, kind),
    }


def test_linking_the_same_pair_twice_counts_the_blocker_once(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b")
    store.beads.link("mayor", b.id, a.id, DepKind.blocks)
    events = store.events.last_id()
    store.beads.link("mayor", b.id, a.id, DepKind.blocks)
    assert store.events.last_id() == events
    finish(store, a.id)
    assert ready_ids(store) == {b.id}


def test_linking_to_an_unknown_bead_is_not_found(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    with pytest.raises(NotFound, match="no bead 'gt-nope'"):
        store.beads.link("mayor", a.id, "gt-nope", DepKind.blocks)
    with pytest.raises(NotFound, match="no bead 'gt-nope'"):
        store.beads.link("mayor", "gt-nope", a.id, DepKind.related)


def test_a_blocker_completing_makes_its_dependent_ready(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b")
    c = store.beads.create("mayor", title="c", deps=[("blocks", a.id), ("blocks", b.id)])
    assert set(store.beads.get(c.id).blocked_by) == {a.id, b.id}
    finish(store, a.id)
    assert c.id not in ready_ids(store) and store.beads.get(c.id).blocked_by == [b.id]
    finish(store, b.id)
    assert c.id in ready_ids(store) and store.beads.get(c.id).blocked_by == []


def test_a_blocker_being_cancelled_makes_its_dependent_ready(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b", deps=[("blocks", a.id)])
    store.beads.transition("mayor", a.id, BeadStatus.cancelled, "dropped", None)
    assert ready_ids(store) == {b.id}


def test_reopening_a_done_blocker_blocks_its_dependent_again(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b", deps=[("blocks", a.id)])
    finish(store, a.id)
    assert ready_ids(store) == {b.id}
    store.beads.transition("mayor", a.id, BeadStatus.open, "it regressed", None)
    assert ready_ids(store) == {a.id}
    assert store.beads.get(b.id).blocked_by == [a.id]


def test_linking_to_a_finished_blocker_does_not_block(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b")
    finish(store, a.id)
    store.beads.link("mayor", b.id, a.id, DepKind.blocks)
    assert ready_ids(store) == {b.id}


def test_unlinking_an_open_blocker_makes_the_dependent_ready(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b", deps=[("blocks", a.id)])
    store.beads.unlink("mayor", b.id, a.id, DepKind.blocks)
    assert ready_ids(store) == {a.id, b.id}
    assert store.events.since(bead_id=b.id)[-1].verb == Verb.bead_unlinked


def test_unlinking_a_finished_blocker_leaves_the_count_at_zero(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    c = store.beads.create("mayor", title="c")
    b = store.beads.create("mayor", title="b", deps=[("blocks", a.id), ("blocks", c.id)])
    finish(store, a.id)
    store.beads.unlink("mayor", b.id, a.id, DepKind.blocks)
    assert store.db.query_one("SELECT open_blockers FROM beads WHERE id=?", (b.id,))["open_blockers"] == 1
    finish(store, c.id)
    assert ready_ids(store) == {b.id}
    # Reopening a blocker that is no longer linked leaves the dependent alone.
    store.beads.transition("mayor", a.id, BeadStatus.open, "again", None)
    assert b.id in ready_ids(store)


def test_unlinking_a_link_that_does_not_exist_is_not_found(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b")
    with pytest.raises(NotFound, match=f"{b.id} has no blocks link to {a.id}"):
        store.beads.unlink("mayor", b.id, a.id, DepKind.blocks)


def test_open_blocker_counts_always_match_the_dependency_graph(store: Store) -> None:
    beads = [store.beads.create("mayor", title=str(i)) for i in range(8)]
    ids = [b.id for b in beads]
    for i in range(1, 8):
        store.beads.link("mayor", ids[i], ids[i - 1], DepKind.blocks)
        if i >= 2:
            store.beads.link("mayor", ids[i], ids[i - 2], DepKind.blocks)
    finish(store, ids[0])
    store.beads.transition("mayor", ids[1], BeadStatus.cancelled, "", None)
    store.beads.transition("mayor", ids[0], BeadStatus.open, "reopen", None)
    store.beads.unlink("mayor", ids[3], ids[1], DepKind.blocks)
    store.beads.transition("mayor", ids[1], BeadStatus.open, "", None)
    mismatches = store.db.query(
        """SELECT b.id, b.open_blockers, (SELECT count(*) FROM deps d JOIN beads o ON o.id = d.depends_on
               WHERE d.bead_id = b.id AND d.kind = 'blocks' AND o.status NOT IN ('done','cancelled')) AS actual
           FROM beads b WHERE b.open_blockers != actual"""
    )
    assert [tuple(r) for r in mismatches] == []


def test_a_polecats_new_bead_is_discovered_from_the_bead_it_holds(
    town: Town, operator: Agent, add_agent: Callable[..., Agent]
) -> None:
    polecat = add_agent("polecat-3")
    work = town.bead_create(operator, "main work")
    town.bead_claim(polecat, work.id)
    side = town.bead_create(polecat, "found a flaky test", type="bug")
    assert [(d.bead_id, d.depends_on, d.kind) for d in side.deps] == [(side.id, work.id, DepKind.discovered_from)]
    assert side.created_by == "polecat-3" and side.status is BeadStatus.open
    assert {s.id for s in town.bead_ready(operator)} == {side.id}


def test_a_polecat_holding_nothing_creates_a_bead_with_no_links(town: Town, add_agent: Callable[..., Agent]) -> None:
    polecat = add_agent("polecat-3")
    assert town.bead_create(polecat, "idea").deps == []
