"""Merge requests: a handed-in branch on its way to `main`, and the bead it finishes, changed together.

Each change to a request and to its bead happens in one transaction with its events, so a crash never leaves
a bead merged whose request is not (or the reverse). States: queued -> testing -> merged | conflicted |
failed | rejected; `landing` is written before main moves, so a restart can tell whether the move happened.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from gastown_mcp.errors import InvalidTransition, NotFound
from gastown_mcp.models import OPEN_MERGE_STATES, BeadResult, BeadStatus, MergeRequest, MergeState, Verb
from gastown_mcp.store import counts as maintained
from gastown_mcp.store import rows
from gastown_mcp.store.beads import BeadRepo
from gastown_mcp.store.db import Database, Tx
from gastown_mcp.store.plans import land_convoys

OPEN = tuple(s.value for s in OPEN_MERGE_STATES)


def _request(row: sqlite3.Row) -> MergeRequest:
    return MergeRequest(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row is not a mapping


class MergeRepo:
    def __init__(self, db: Database, beads: BeadRepo) -> None:
        self.db = db
        self.beads = beads

    # -- reading -----------------------------------------------------------------------------------
    def get(self, request_id: int) -> MergeRequest:
        row = self.db.query_one("SELECT * FROM merge_requests WHERE id=?", (request_id,))
        if row is None:
            raise NotFound(f"no merge request {request_id}; list them with merge_list")
        return _request(row)

    def search(
        self, *, rig: str | None = None, states: Sequence[str] = (), bead_id: str | None = None, limit: int = 50
    ) -> list[MergeRequest]:
        where, params = [], []
        if rig:
            where.append("rig=?")
            params.append(rig)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        if bead_id:
            where.append("bead_id=?")
            params.append(bead_id)
        sql = "SELECT * FROM merge_requests" + (" WHERE " + " AND ".join(where) if where else "")
        return [_request(r) for r in self.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))]

    def queue(self, rig: str, state: MergeState = MergeState.queued, limit: int = 100) -> list[MergeRequest]:
        """Requests of one rig in one state, oldest first (the order they land in)."""
        found = self.db.query(
            "SELECT * FROM merge_requests WHERE rig=? AND state=? ORDER BY id LIMIT ?", (rig, state.value, limit)
        )
        return [_request(r) for r in found]

    def rigs_with_work(self) -> builtins.list[str]:
        found = self.db.query(f"SELECT DISTINCT rig FROM merge_requests WHERE state IN {OPEN} ORDER BY rig")
        return [r["rig"] for r in found]

    def counts(self) -> dict[str, int]:
        return maintained.under(self.db.conn, "merges:")

    # -- writing -----------------------------------------------------------------------------------
    def hand_in(
        self, actor: str, bead_id: str, result: BeadResult, require_assignee: str | None, rig: str, ref: str
    ) -> MergeRequest:
        """Complete the bead (done, awaiting merge) and queue its handed-in commit, in one transaction."""
        assert result.commit is not None and result.base is not None
        with self.db.write() as tx:
            self.beads._complete(tx, actor, bead_id, result, require_assignee, merge_pending=True)
            rid = self._open(tx, actor, rig, bead_id, actor, ref, result.commit, result.base)
        return self.get(rid)

    def open(self, actor: str, rig: str, bead_id: str, agent: str, ref: str, tip: str, base: str) -> MergeRequest:
        """Queue a hand-in; a bead with a request still open gets that request updated, not a second one."""
        with self.db.write() as tx:
            rid = self._open(tx, actor, rig, bead_id, agent, ref, tip, base)
        return self.get(rid)

    def _open(self, tx: Tx, actor: str, rig: str, bead_id: str, agent: str, ref: str, tip: str, base: str) -> int:
        row = tx.execute(
            f"SELECT * FROM merge_requests WHERE bead_id=? AND state IN {OPEN} ORDER BY id DESC LIMIT 1",
            (bead_id,),
        ).fetchone()
        if row is not None:
            tx.execute(
                """UPDATE merge_requests SET agent=?, ref=?, tip=?, base=?, state='queued', landing=NULL,
                   updated_at=? WHERE id=?""",
                (agent, ref, tip, base, tx.now, row["id"]),
            )
            rid = int(row["id"])
        else:
            cur = tx.execute(
                """INSERT INTO merge_requests (rig, bead_id, agent, ref, tip, base, created_at, updated_at)
                   VALUES (?,?,?,?,?,?,?,?)""",
                (rig, bead_id, agent, ref, tip, base, tx.now, tx.now),
            )
            rid = int(cur.lastrowid or 0)
        tx.event(actor, Verb.merge_queued, bead_id=bead_id, agent=agent, after={"request": rid, "tip": tip})
        return rid

    def start(self, actor: str, ids: Sequence[int]) -> None:
        """queued -> testing, one more attempt each."""
        with self.db.write() as tx:
            for rid in ids:
                row = self._locked(tx, rid, (MergeState.queued,))
                tx.execute(
                    "UPDATE merge_requests SET state='testing', attempts=attempts+1, updated_at=? WHERE id=?",
                    (tx.now, rid),
                )
                tx.event(actor, Verb.merge_testing, bead_id=row["bead_id"], after={"request": rid})

    def set_landing(self, ids: Sequence[int], commit: str | None, gate_runs: int = 0) -> None:
        """Record the commit main is about to move to (before the compare-and-swap) and the gate runs spent."""
        with self.db.write() as tx:
            for rid in ids:
                tx.execute(
                    "UPDATE merge_requests SET landing=?, gate_runs=gate_runs+?, updated_at=? WHERE id=?",
                    (commit, gate_runs, tx.now, rid),
                )

    def merged(self, actor: str, ids: Sequence[int], landed: str) -> None:
        """The requests are on main at `landed`: their beads are finished and release their dependents."""
        with self.db.write() as tx:
            finished = []
            for rid in ids:
                row = self._locked(tx, rid, (MergeState.testing,))
                finished.append(row["bead_id"])
                tx.execute(
                    """UPDATE merge_requests SET state='merged', landed=?, landing=NULL, merged_at=?, updated_at=?
                       WHERE id=?""",
                    (landed, tx.now, tx.now, rid),
                )
                tx.event(actor, Verb.merge_merged, bead_id=row["bead_id"], after={"request": rid, "landed": landed})
                bead = tx.execute("SELECT * FROM beads WHERE id=?", (row["bead_id"],)).fetchone()
                if bead is not None and bead["merge_pending"]:
                    meta = {**(rows.loads(bead["metadata"]) or {}), "merged": landed}
                    self.beads._set_status(
                        tx, bead, BeadStatus(bead["status"]), merge_pending=0, metadata=json.dumps(meta)
                    )
                    tx.event(actor, Verb.bead_merged, bead_id=row["bead_id"], after={"commit": landed})
            land_convoys(tx, self.beads, actor, finished)

    def requeue(self, actor: str, rid: int, why: str) -> None:
        """testing -> queued (a restart found it mid-test, or main moved under it): it is tried again."""
        with self.db.write() as tx:
            row = self._locked(tx, rid, (MergeState.testing,))
            tx.execute(
                "UPDATE merge_requests SET state='queued', landing=NULL, detail=?, updated_at=? WHERE id=?",
                (why, tx.now, rid),
            )
            tx.event(actor, Verb.merge_queued, bead_id=row["bead_id"], after={"request": rid, "why": why})

    def hand_back(
        self,
        actor: str,
        rid: int,
        state: MergeState,
        detail: str,
        comment: str,
        *,
        log_tail: str = "",
        block_after: int | None = None,
    ) -> tuple[MergeRequest, BeadStatus | None]:
        """End a request without landing (conflicted, failed, rejected) and give its bead back for rework:
        open with one more attempt (blocked once attempts reach `block_after`), the comment saying what to fix,
        and `rework_from` naming the handed-in commit a new polecat starts from. Returns the bead's new status
        (None when the bead had moved on meanwhile and was left alone)."""
        allowed = (MergeState.queued, MergeState.testing)
        with self.db.write() as tx:
            row = self._locked(tx, rid, allowed)
            tx.execute(
                "UPDATE merge_requests SET state=?, detail=?, log_tail=?, landing=NULL, updated_at=? WHERE id=?",
                (state.value, detail, log_tail, tx.now, rid),
            )
            tx.event(actor, Verb.of_merge(state), bead_id=row["bead_id"], after={"request": rid, "detail": detail})
            bead = tx.execute("SELECT * FROM beads WHERE id=?", (row["bead_id"],)).fetchone()
            target = None
            if bead is not None and bead["status"] == BeadStatus.done.value and bead["merge_pending"]:
                attempts = bead["attempts"] + 1
                target = BeadStatus.open
                if block_after is not None and attempts >= block_after:
                    target = BeadStatus.blocked
                meta = {**(rows.loads(bead["metadata"]) or {}), "rework_from": row["tip"]}
                self.beads._set_status(
                    tx,
                    bead,
                    target,
                    merge_pending=0,
                    attempts=attempts,
                    assignee=None,
                    metadata=json.dumps(meta),
                )
                tx.execute(
                    "INSERT INTO comments (bead_id, author, body, created_at) VALUES (?,?,?,?)",
                    (row["bead_id"], actor, comment, tx.now),
                )
                tx.event(
                    actor,
                    Verb.of_bead_status(target),
                    bead_id=row["bead_id"],
                    after={"status": target.value, "reason": detail, "attempts": attempts},
                )
        if target is not None:
            self.beads.run_ended(row["bead_id"], row["agent"], "handed back")
        return self.get(rid), target

    def retry(self, actor: str, rid: int) -> MergeRequest:
        """conflicted, failed or rejected -> queued again, with its bead back to done awaiting merge."""
        ended = (MergeState.conflicted, MergeState.failed, MergeState.rejected)
        with self.db.write() as tx:
            row = self._locked(tx, rid, ended)
            bead = tx.execute("SELECT * FROM beads WHERE id=?", (row["bead_id"],)).fetchone()
            if bead is None or bead["status"] not in (BeadStatus.open.value, BeadStatus.blocked.value):
                raise InvalidTransition(
                    f"bead {row['bead_id']} is {bead['status'] if bead else 'gone'}; only a request whose bead "
                    "waits for rework can be retried"
                )
            if bead["assignee"]:
                raise InvalidTransition(f"bead {row['bead_id']} is being reworked by {bead['assignee']}")
            self.beads._set_status(tx, bead, BeadStatus.done, merge_pending=1)
            tx.execute("UPDATE merge_requests SET state='queued', detail='', updated_at=? WHERE id=?", (tx.now, rid))
            tx.event(actor, Verb.merge_queued, bead_id=row["bead_id"], after={"request": rid, "retry": True})
        return self.get(rid)

    def _locked(self, tx: Tx, rid: int, allowed: Sequence[MergeState]) -> Any:
        row = tx.execute("SELECT * FROM merge_requests WHERE id=?", (rid,)).fetchone()
        if row is None:
            raise NotFound(f"no merge request {rid}; list them with merge_list")
        if row["state"] not in {s.value for s in allowed}:
            raise InvalidTransition(
                f"merge request {rid} is {row['state']}; this needs one that is {' or '.join(s for s in allowed)}"
            )
        return row
