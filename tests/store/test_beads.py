"""Beads in the store: creating, ids, validation, editing, labels, comments and status transitions."""

from __future__ import annotations

import re

import pytest

from gastown_mcp.errors import InvalidInput, InvalidTransition, NotFound, StoreError
from gastown_mcp.models import Agent, BeadStatus, DepKind, Verb
from gastown_mcp.store import Store
from gastown_mcp.store.ids import ALPHABET, MIN_LENGTH, hash_length
from gastown_mcp.town import Town


def table_counts(store: Store) -> dict[str, int]:
    return {
        t: store.db.query_one(f"SELECT count(*) AS n FROM {t}")["n"]
        for t in ("beads", "labels", "deps", "comments", "events")
    }


def test_a_bead_is_created_with_every_field(store: Store) -> None:
    bead = store.beads.create(
        "mayor",
        title="Fix the parser",
        description="It chokes on tabs",
        acceptance="tabs parse",
        notes="seen in CI",
        type="bug",
        priority=0,
        labels=["parser", "ci", "parser"],
        metadata={"source": "ci", "run": 7},
    )
    again = store.beads.get(bead.id)
    assert again == bead
    assert bead.title == "Fix the parser"
    assert bead.description == "It chokes on tabs"
    assert bead.acceptance == "tabs parse"
    assert bead.notes == "seen in CI"
    assert bead.type == "bug"
    assert bead.priority == 0
    assert bead.status is BeadStatus.open
    assert bead.labels == ["ci", "parser"]
    assert bead.metadata == {"source": "ci", "run": 7}
    assert bead.created_by == "mayor"
    assert bead.assignee is None and bead.lease_expires_at is None
    assert bead.attempts == 0 and bead.result is None and bead.closed_at is None
    assert bead.created_at == bead.updated_at


def test_a_bead_gets_defaults_for_everything_but_its_title(store: Store) -> None:
    bead = store.beads.create("mayor", title="Just a title")
    assert (bead.type, bead.priority, bead.status, bead.labels, bead.metadata) == ("task", 2, "open", [], {})


def test_bead_ids_are_the_town_prefix_and_a_short_hash(store: Store) -> None:
    ids = {store.beads.create("mayor", title=f"b{i}").id for i in range(50)}
    assert len(ids) == 50
    pattern = re.compile(rf"^gt-[{ALPHABET}]{{{MIN_LENGTH}}}$")
    assert all(pattern.match(i) for i in ids), ids


def test_hash_length_grows_with_the_table_and_never_shrinks() -> None:
    lengths = [hash_length(n) for n in (0, 1, 10, 1_000, 1_679, 1_680, 60_466, 100_000, 10**7)]
    assert lengths == sorted(lengths)
    assert lengths[0] == MIN_LENGTH
    assert hash_length(1_680) == MIN_LENGTH + 1  # 36**4 / 1000 existing ids
    assert hash_length(10**7) > hash_length(100_000)


def test_bead_ids_grow_longer_as_the_table_grows(store: Store) -> None:
    # The id length follows the table size (max rowid); plant a row far along instead of inserting a million.
    with store.db.write() as tx:
        tx.execute(
            "INSERT INTO beads (rowid, id, title, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (1_000_000, "gt-planted", "planted", "test", tx.now, tx.now),
        )
    bead = store.beads.create("mayor", title="after a million")
    prefix, _, short = bead.id.partition("-")
    assert prefix == "gt"
    assert len(short) == hash_length(1_000_000) > MIN_LENGTH


def test_children_are_numbered_under_their_parent(store: Store) -> None:
    epic = store.beads.create("mayor", title="Epic", type="epic")
    first = store.beads.create("mayor", title="part one", parent=epic.id)
    second = store.beads.create("mayor", title="part two", parent=epic.id)
    grandchild = store.beads.create("mayor", title="part one, step a", parent=first.id)
    assert first.id == f"{epic.id}.1"
    assert second.id == f"{epic.id}.2"
    assert grandchild.id == f"{epic.id}.1.1"
    assert {(d.bead_id, d.depends_on, d.kind) for d in first.deps} >= {(first.id, epic.id, DepKind.parent)}


def test_a_child_of_a_missing_parent_is_refused_and_nothing_is_written(store: Store) -> None:
    before = table_counts(store)
    with pytest.raises(NotFound, match="no parent bead 'gt-nope'"):
        store.beads.create("mayor", title="orphan", parent="gt-nope")
    assert table_counts(store) == before


def test_a_title_is_required(town: Town, operator: Agent) -> None:
    for empty in ("", "   "):
        with pytest.raises(InvalidInput, match="needs a title"):
            town.bead_create(operator, empty)
    assert town._store.beads.counts() == {}


def test_a_title_may_be_500_characters_but_not_501(town: Town, operator: Agent) -> None:
    assert len(town.bead_create(operator, "x" * 500).title) == 500
    with pytest.raises(InvalidInput, match="title is 501 characters; the limit is 500"):
        town.bead_create(operator, "x" * 501)
    assert town._store.beads.counts() == {"open": 1}


@pytest.mark.parametrize("priority", [-1, 5, 100, True, "1"])
def test_priority_outside_0_to_4_is_refused_by_the_town(town: Town, operator: Agent, priority: object) -> None:
    with pytest.raises(InvalidInput, match="priority must be an integer from 0"):
        town.bead_create(operator, "t", priority=priority)  # type: ignore[arg-type]
    assert town._store.beads.counts() == {}


def test_priority_outside_0_to_4_is_refused_by_the_database_too(store: Store) -> None:
    before = table_counts(store)
    with pytest.raises(StoreError, match="nothing was changed"):
        store.beads.create("mayor", title="t", priority=9, labels=["a"])
    assert table_counts(store) == before


def test_every_priority_from_0_to_4_is_accepted(town: Town, operator: Agent) -> None:
    assert [town.bead_create(operator, f"p{p}", priority=p).priority for p in range(5)] == [0, 1, 2, 3, 4]


def test_an_unknown_bead_id_is_not_found_with_a_pointer_to_the_list_tools(store: Store) -> None:
    with pytest.raises(NotFound, match=r"no bead 'gt-zzzz'; find ids with bead_list"):
        store.beads.get("gt-zzzz")
    for call in (
        lambda: store.beads.claim("polecat-1", "gt-zzzz", 60),
        lambda: store.beads.comment("mayor", "gt-zzzz", "hi"),
        lambda: store.beads.edit("mayor", "gt-zzzz", {"notes": "n"}, None),
        lambda: store.beads.transition("mayor", "gt-zzzz", BeadStatus.cancelled, "", None),
    ):
        with pytest.raises(NotFound, match="gt-zzzz"):
            call()
    assert table_counts(store)["events"] == 0


def test_editing_changes_the_fields_and_records_what_they_were(store: Store) -> None:
    bead = store.beads.create("mayor", title="old", priority=3)
    edited = store.beads.edit(
        "mayor",
        bead.id,
        {"title": "new", "description": "d", "acceptance": "a", "notes": "n", "type": "chore", "priority": 1},
        None,
    )
    assert (edited.title, edited.description, edited.acceptance, edited.notes, edited.type, edited.priority) == (
        "new",
        "d",
        "a",
        "n",
        "chore",
        1,
    )
    assert edited.updated_at >= bead.updated_at
    event = store.events.since(bead_id=bead.id)[-1]
    assert event.verb == Verb.bead_updated
    assert event.before == {
        "title": "old",
        "description": "",
        "acceptance": "",
        "notes": "",
        "type": "task",
        "priority": 3,
    }
    assert event.after is not None and event.after["title"] == "new"


def test_an_edit_with_nothing_to_change_is_refused(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    with pytest.raises(InvalidInput, match="nothing to update"):
        store.beads.edit("mayor", bead.id, {"title": None}, None)
    assert len(store.events.since(bead_id=bead.id)) == 1


def test_labels_are_replaced_as_a_set_and_searchable(store: Store) -> None:
    bead = store.beads.create("mayor", title="t", labels=["a", "b"])
    other = store.beads.create("mayor", title="u", labels=["b"])
    assert store.beads.edit("mayor", bead.id, {"labels": ["c", "b", "c"]}, None).labels == ["b", "c"]
    assert [s.id for s in store.beads.search(label="a")] == []
    assert {s.id for s in store.beads.search(label="b")} == {bead.id, other.id}
    assert store.beads.edit("mayor", bead.id, {"labels": []}, None).labels == []


def test_bad_labels_are_refused_by_the_town(town: Town, operator: Agent) -> None:
    for bad in ("", "has space", "-leading", "x" * 65):
        with pytest.raises(InvalidInput, match="label"):
            town.bead_create(operator, "t", labels=[bad])
    with pytest.raises(InvalidInput, match="at most 32 labels"):
        town.bead_create(operator, "t", labels=[f"l{i}" for i in range(33)])


def test_comments_are_kept_in_order_with_their_author(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    first = store.beads.comment("polecat-1", bead.id, "started")
    second = store.beads.comment("mayor", bead.id, "thanks")
    comments = store.beads.get(bead.id).comments
    assert [(c.id, c.author, c.body) for c in comments] == [
        (first, "polecat-1", "started"),
        (second, "mayor", "thanks"),
    ]


def test_blocking_needs_a_reason_and_changes_nothing_without_one(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    with pytest.raises(InvalidInput, match="needs a reason"):
        store.beads.transition("mayor", bead.id, BeadStatus.blocked, "  ", None)
    assert store.beads.get(bead.id) == bead


def test_blocking_then_unblocking_keeps_the_reason_in_the_notes(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    blocked = store.beads.transition("mayor", bead.id, BeadStatus.blocked, "waits on the API key", None)
    assert blocked.status is BeadStatus.blocked
    assert "blocked: waits on the API key" in blocked.notes
    reopened = store.beads.transition("mayor", bead.id, BeadStatus.open, "key arrived", None)
    assert reopened.status is BeadStatus.open
    assert [e.verb for e in store.events.since(bead_id=bead.id)] == [
        Verb.bead_created,
        Verb.bead_blocked,
        Verb.bead_reopened,
    ]


def test_blocking_a_claimed_bead_drops_the_claim(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, 600)
    blocked = store.beads.transition("polecat-1", bead.id, BeadStatus.blocked, "stuck", "polecat-1")
    assert (blocked.status, blocked.assignee, blocked.lease_expires_at) == ("blocked", None, None)


def test_cancel_and_reopen(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    cancelled = store.beads.transition("mayor", bead.id, BeadStatus.cancelled, "not needed", None)
    assert cancelled.status is BeadStatus.cancelled and cancelled.closed_at is not None
    reopened = store.beads.transition("mayor", bead.id, BeadStatus.open, "", None)
    assert reopened.status is BeadStatus.open and reopened.closed_at is None


def test_a_completed_bead_keeps_its_result_and_can_be_reopened(store: Store) -> None:
    from gastown_mcp.models import BeadResult

    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, 600)
    done = store.beads.complete("polecat-1", bead.id, BeadResult(summary="did it", branch="b", commit="c"), None)
    assert done.status is BeadStatus.done and done.result == BeadResult(summary="did it", branch="b", commit="c")
    assert done.assignee == "polecat-1" and done.lease_expires_at is None and done.closed_at is not None
    assert store.beads.transition("mayor", bead.id, BeadStatus.open, "regressed", None).status is BeadStatus.open


@pytest.mark.parametrize(
    ("start", "target", "message"),
    [
        ("done", BeadStatus.blocked, "it cannot become blocked"),
        ("cancelled", BeadStatus.cancelled, "it cannot become cancelled"),
        ("open", BeadStatus.open, "it cannot become open"),
        ("in_progress", BeadStatus.open, "it cannot become open"),
        ("blocked", BeadStatus.blocked, "it cannot become blocked"),
        ("open", BeadStatus.in_progress, "use bead_claim"),
        ("in_progress", BeadStatus.done, "use bead_complete"),
    ],
)
def test_invalid_transitions_are_refused_and_change_nothing(
    store: Store, start: str, target: BeadStatus, message: str
) -> None:
    from gastown_mcp.models import BeadResult

    bead = store.beads.create("mayor", title="t")
    if start in ("in_progress", "done"):
        store.beads.claim("polecat-1", bead.id, 600)
    if start == "done":
        store.beads.complete("polecat-1", bead.id, BeadResult(summary="s"), None)
    if start in ("cancelled", "blocked"):
        store.beads.transition("mayor", bead.id, BeadStatus(start), "why", None)
    before, counts = store.beads.get(bead.id), table_counts(store)
    assert before.status == start
    with pytest.raises(InvalidTransition, match=message):
        store.beads.transition("mayor", bead.id, target, "why", None)
    assert store.beads.get(bead.id) == before
    assert table_counts(store) == counts


@pytest.mark.parametrize("start", ["open", "blocked", "done", "cancelled"])
def test_only_an_in_progress_bead_can_be_completed_or_released(store: Store, start: str) -> None:
    from gastown_mcp.models import BeadResult

    bead = store.beads.create("mayor", title="t")
    if start == "done":
        store.beads.claim("polecat-1", bead.id, 600)
        store.beads.complete("polecat-1", bead.id, BeadResult(summary="s"), None)
    elif start != "open":
        store.beads.transition("mayor", bead.id, BeadStatus(start), "why", None)
    before, counts = store.beads.get(bead.id), table_counts(store)
    with pytest.raises(InvalidTransition, match="completed"):
        store.beads.complete("mayor", bead.id, BeadResult(summary="s"), None)
    with pytest.raises(InvalidTransition, match="nothing to release"):
        store.beads.release("mayor", bead.id, "r", None)
    assert store.beads.get(bead.id) == before and table_counts(store) == counts


def test_a_released_bead_is_open_again_with_one_more_attempt(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, 600)
    released = store.beads.release("polecat-1", bead.id, "gave up", "polecat-1")
    assert (released.status, released.assignee, released.attempts) == ("open", None, 1)


def test_release_blocks_the_bead_once_attempts_reach_the_limit(store: Store) -> None:
    bead = store.beads.create("mayor", title="t")
    store.beads.claim("polecat-1", bead.id, 600)
    assert store.beads.release("witness", bead.id, "stalled", None, block_after=2).status is BeadStatus.open
    store.beads.claim("polecat-2", bead.id, 600)
    blocked = store.beads.release("witness", bead.id, "stalled again", None, block_after=2)
    assert (blocked.status, blocked.attempts) == ("blocked", 2)
    assert store.events.since(bead_id=bead.id)[-1].verb == Verb.bead_blocked
