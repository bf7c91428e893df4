"""Plans and convoys: a checked plan becomes an epic bead and its children in one transaction, and a convoy
lands (the epic closes, the mayor gets one mail) in the same transaction that merges or cancels its last open
child; a convoy whose children were all cancelled is cancelled the same way.

A convoy is an epic whose metadata holds `convoy` (goal, rig); it waits on each child with a `blocks` link, so
it is never ready work, and each child is its `parent`-linked child (`gt-4f2a.1`, `gt-4f2a.2`, ...).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gastown_mcp.models import BeadStatus, DepKind, MessageKind, Role, Verb
from gastown_mcp.store import rows
from gastown_mcp.store.beads import BeadRepo
from gastown_mcp.store.db import Database, Tx
from gastown_mcp.store.messages import send_in

OPERATOR = "operator"  # the human at the CLI: mail goes there when the town has no mayor


@dataclass(frozen=True)
class NewItem:
    """One bead of a plan: its plan key, the bead's fields (as `BeadRepo._insert` takes them), its blockers."""

    key: str
    fields: dict[str, Any]
    depends_on: Sequence[str] = field(default_factory=tuple)


class PlanRepo:
    def __init__(self, db: Database, beads: BeadRepo) -> None:
        self.db = db
        self.beads = beads

    def create(self, actor: str, epic: dict[str, Any], items: Sequence[NewItem]) -> str:
        """The epic, its children, their `blocks` links and the epic's wait on each child: all or nothing.
        Items may name only items before or after them; the caller has checked there is no cycle."""
        with self.db.write() as tx:
            epic_id = self.beads._insert(tx, actor, type="epic", **epic)
            ids: dict[str, str] = {}
            for item in items:
                ids[item.key] = self.beads._insert(tx, actor, parent=epic_id, **item.fields)
            for item in items:
                for dep in item.depends_on:
                    self.beads._link(tx, actor, ids[item.key], ids[dep], DepKind.blocks)
            for bead_id in ids.values():
                self.beads._link(tx, actor, epic_id, bead_id, DepKind.blocks)
            tx.event(actor, Verb.plan_created, bead_id=epic_id, after={"beads": list(ids.values())})
        return epic_id

    def convoys(self, limit: int = 50) -> list[str]:
        """Convoy (epic) ids, newest first."""
        found = self.db.query(
            "SELECT id FROM beads WHERE type='epic' AND json_extract(metadata, '$.convoy') IS NOT NULL "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [r["id"] for r in found]

    def children(self, epic_id: str) -> list[sqlite3.Row]:
        """Each child: id, title, status, assignee, merge_pending, merged (commit on main or NULL), plan key."""
        return self.db.query(
            """SELECT b.id, b.title, b.status, b.assignee, b.merge_pending,
                      json_extract(b.metadata, '$.merged') AS merged, json_extract(b.metadata, '$.plan_key') AS key
               FROM deps d JOIN beads b ON b.id = d.bead_id
               WHERE d.depends_on=? AND d.kind='parent' ORDER BY b.rowid""",
            (epic_id,),
        )

    def record(self, actor: str, verb: Verb, bead_id: str, after: dict[str, Any]) -> None:
        """An event on its own (a verify result, a review verdict)."""
        with self.db.write() as tx:
            tx.event(actor, verb, bead_id=bead_id, after=after)


def land_convoys(tx: Tx, beads: BeadRepo, actor: str, closed: Sequence[str]) -> list[str]:
    """Inside the transaction that merged or cancelled `closed`: settle each convoy whose children are now all
    merged on main or cancelled. One merged child or more lands it (the epic is done); none cancels it. The mayor
    gets one mail either way. Returns the convoys that landed or were cancelled."""
    settled = []
    epics = {
        r["depends_on"]
        for bead_id in closed
        for r in tx.execute("SELECT depends_on FROM deps WHERE bead_id=? AND kind='parent'", (bead_id,))
    }
    for epic_id in sorted(epics):
        epic = tx.execute("SELECT * FROM beads WHERE id=?", (epic_id,)).fetchone()
        if epic is None or epic["status"] != BeadStatus.open.value:
            continue
        meta = rows.loads(epic["metadata"]) or {}
        if "convoy" not in meta:
            continue
        counts = tx.execute(
            """SELECT count(*) AS n,
                      sum(json_extract(b.metadata, '$.merged') IS NOT NULL) AS merged,
                      sum(json_extract(b.metadata, '$.merged') IS NULL AND b.status = 'cancelled') AS cancelled
               FROM deps d JOIN beads b ON b.id = d.bead_id WHERE d.depends_on=? AND d.kind='parent'""",
            (epic_id,),
        ).fetchone()
        n, merged, cancelled = counts["n"], counts["merged"] or 0, counts["cancelled"] or 0
        if merged + cancelled < n:
            continue
        goal = meta["convoy"].get("goal") or epic["title"]
        tally = {"beads": n, "merged": merged, "cancelled": cancelled}
        if merged:
            meta["convoy"] = {**meta["convoy"], "landed_at": tx.now}
            beads._set_status(tx, epic, BeadStatus.done, metadata=json.dumps(meta))
            tx.event(actor, Verb.convoy_landed, bead_id=epic_id, after=tally)
            what = (
                f"all {n} of its beads are merged on main"
                if not cancelled
                else (f"{merged} of its {n} beads are merged on main and {cancelled} were cancelled")
            )
            subject, body = f"convoy {epic_id} landed", f"Convoy {epic_id} ({epic['title']}) landed: {what}."
        else:
            meta["convoy"] = {**meta["convoy"], "cancelled_at": tx.now}
            beads._set_status(tx, epic, BeadStatus.cancelled, metadata=json.dumps(meta))
            tx.event(actor, Verb.convoy_cancelled, bead_id=epic_id, after=tally)
            subject = f"convoy {epic_id} cancelled"
            body = f"Convoy {epic_id} ({epic['title']}) is cancelled: all {n} of its beads were cancelled."
        mayor = tx.execute(
            "SELECT name FROM agents WHERE role=? AND state != 'removed' ORDER BY created_at, name LIMIT 1",
            (Role.mayor.value,),
        ).fetchone()
        send_in(
            tx, actor, mayor["name"] if mayor else OPERATOR, MessageKind.mail, f"{body} Goal: {goal}", subject[:200]
        )
        settled.append(epic_id)
    return settled
