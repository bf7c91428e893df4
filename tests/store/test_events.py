"""The audit trail: one event per state change, written in the change's own transaction, mirrored to the
JSONL journal, and exported with every bead, label, dependency and comment."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from gastown_mcp.errors import GastownError
from gastown_mcp.models import AgentState, BeadResult, BeadStatus, DepKind, MessageKind, Role, Verb
from gastown_mcp.store import Store
from gastown_mcp.store.events import EXPORT_TABLES


def new_events(store: Store, op: Callable[[], Any]) -> list[str]:
    mark = store.events.last_id()
    op()
    return [e.verb for e in store.events.since(after_id=mark)]


def test_every_state_change_writes_exactly_its_events(store: Store) -> None:
    b = store.beads
    a = b.create("mayor", title="a")
    c = b.create("mayor", title="c")
    cases: list[tuple[Callable[[], Any], list[str]]] = [
        (lambda: b.create("mayor", title="x"), [Verb.bead_created]),
        (
            lambda: b.create("mayor", title="y", parent=a.id, deps=[("blocks", c.id), ("related", a.id)]),
            [Verb.bead_linked, Verb.bead_linked, Verb.bead_linked, Verb.bead_created],
        ),
        (lambda: b.link("mayor", c.id, a.id, DepKind.blocks), [Verb.bead_linked]),
        (lambda: b.unlink("mayor", c.id, a.id, DepKind.blocks), [Verb.bead_unlinked]),
        (lambda: b.edit("mayor", a.id, {"notes": "n", "labels": ["l"]}, None), [Verb.bead_updated]),
        (lambda: b.comment("mayor", a.id, "hi"), [Verb.bead_commented]),
        (lambda: b.claim("polecat-1", a.id, 600), [Verb.bead_claimed]),
        (lambda: b.claim("polecat-1", a.id, 600), []),  # a renewal is not a state change
        (lambda: b.release("polecat-1", a.id, "r", "polecat-1"), [Verb.bead_released]),
        (lambda: b.claim("polecat-1", a.id, -1), [Verb.bead_claimed]),
        (lambda: b.claim("polecat-2", a.id, 600), [Verb.bead_taken_over]),
        (lambda: b.complete("polecat-2", a.id, BeadResult(summary="s"), None), [Verb.bead_completed]),
        (lambda: b.transition("mayor", a.id, BeadStatus.open, "again", None), [Verb.bead_reopened]),
        (lambda: b.transition("mayor", a.id, BeadStatus.blocked, "why", None), [Verb.bead_blocked]),
        (lambda: b.transition("mayor", a.id, BeadStatus.cancelled, "", None), [Verb.bead_cancelled]),
        (lambda: store.agents.create("operator", "p", Role.polecat), [Verb.agent_created]),
        (lambda: store.agents.set_state("operator", "p", AgentState.running), [Verb.agent_running]),
        (lambda: store.agents.rotate("operator", "p"), [Verb.agent_token_rotated]),
        (lambda: store.agents.touch("p", 600), []),
        (lambda: store.messages.send("mayor", "p", MessageKind.mail, "m"), [Verb.mail_sent]),
        (lambda: store.messages.send("mayor", "p", MessageKind.nudge, "n"), [Verb.nudge_sent]),
        (lambda: store.messages.deliver_nudges("p"), [Verb.nudge_delivered]),
        (lambda: store.messages.inbox("p"), [Verb.message_delivered]),
        (lambda: store.messages.acknowledge("p", [1, 2]), [Verb.message_acknowledged, Verb.message_acknowledged]),
    ]
    for op, expected in cases:
        assert new_events(store, op) == expected


def test_a_failed_change_writes_no_event(store: Store) -> None:
    a = store.beads.create("mayor", title="a")
    b = store.beads.create("mayor", title="b", deps=[("blocks", a.id)])
    store.agents.create("operator", "mayor", Role.mayor)
    failing = [
        lambda: store.beads.link("mayor", a.id, b.id, DepKind.blocks),
        lambda: store.beads.claim("polecat-1", b.id, 600),
        lambda: store.beads.complete("mayor", a.id, BeadResult(summary="s"), None),
        lambda: store.beads.transition("mayor", a.id, BeadStatus.blocked, "", None),
        lambda: store.beads.create("mayor", title="z", deps=[("blocks", "gt-none")]),
        lambda: store.agents.create("operator", "mayor", Role.mayor),
    ]
    for op in failing:
        mark = store.events.last_id()
        with pytest.raises(GastownError):
            op()
        assert store.events.since(after_id=mark) == []


def test_an_event_belongs_to_its_transaction(store: Store, settings: Any) -> None:
    with pytest.raises(RuntimeError), store.db.write() as tx:
        tx.event("mayor", Verb.bead_created, bead_id="gt-ghost")
        raise RuntimeError("the change failed after recording its event")
    assert store.events.last_id() == 0
    assert not settings.journal_path.exists() or settings.journal_path.read_text() == ""


def test_the_journal_holds_every_event_row_in_sequence(store: Store, settings: Any) -> None:
    a = store.beads.create("mayor", title="a", labels=["x"])
    store.beads.create("mayor", title="b", deps=[("blocks", a.id)])
    store.beads.claim("polecat-1", a.id, 600)
    store.beads.complete("polecat-1", a.id, BeadResult(summary="done", commit="abc"), "polecat-1")
    store.messages.send("mayor", "polecat-1", MessageKind.mail, "thanks")
    journal = [json.loads(line) for line in settings.journal_path.read_text().splitlines()]
    assert [r["seq"] for r in journal] == list(range(1, len(journal) + 1))
    journaled = [row["id"] for r in journal for table, _, row in r["changes"] if table == "events"]
    table = [e.id for e in store.events.since(limit=1000)]
    assert len(table) == 6
    assert journaled == table


def test_export_writes_every_bead_label_dependency_comment_and_event(store: Store) -> None:
    a = store.beads.create("mayor", title="a", labels=["x", "y"], metadata={"k": 1})
    b = store.beads.create("mayor", title="b", deps=[("blocks", a.id)])
    store.beads.comment("polecat-1", b.id, "note")
    store.beads.claim("polecat-1", a.id, 600)
    store.beads.complete("polecat-1", a.id, BeadResult(summary="done"), None)
    out = io.StringIO()
    counts = store.events.export(out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert counts == {"beads": 2, "labels": 2, "deps": 1, "comments": 1, "events": 6}
    assert tuple(counts) == EXPORT_TABLES
    by_table: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_table.setdefault(r.pop("table"), []).append(r)
    assert {t: len(rs) for t, rs in by_table.items()} == counts
    exported_a = next(r for r in by_table["beads"] if r["id"] == a.id)
    assert exported_a["metadata"] == {"k": 1} and exported_a["result"] == {
        "summary": "done",
        "branch": None,
        "commit": None,
        "base": None,
    }
    assert by_table["deps"][0] | {"created_at": None} == {
        "bead_id": b.id,
        "depends_on": a.id,
        "kind": "blocks",
        "created_at": None,
        "created_by": "mayor",
    }
    assert [e["verb"] for e in by_table["events"]][-1] == Verb.bead_completed
    assert isinstance(by_table["events"][-1]["after"], dict)
