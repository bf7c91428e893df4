"""Beads: create, read, list, the ready queue, claims with leases, transitions, dependencies, comments.

Ready work is served from a partial index over a maintained `open_blockers` count, so `ready()` is an index
scan with a LIMIT at any table size. Every write is one `BEGIN IMMEDIATE` transaction that also records its
event, so a claim is a compare-and-swap: exactly one concurrent caller wins.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from gastown_mcp.errors import Conflict, Forbidden, InvalidInput, InvalidTransition, NotFound
from gastown_mcp.models import (
    CLOSED_STATUSES,
    Bead,
    BeadBrief,
    BeadResult,
    BeadStatus,
    BeadSummary,
    Dep,
    DepKind,
    Verb,
)
from gastown_mcp.store import counts as maintained
from gastown_mcp.store import glance, rows
from gastown_mcp.store.db import Database, Tx, now_iso
from gastown_mcp.store.ids import hash_length, random_hash

SUMMARY_COLS = glance.SUMMARY_COLS
CLOSED = tuple(s.value for s in CLOSED_STATUSES)
# A blocker holds its dependents while it is open, or done with its commit not yet on main.
BLOCKING = f"(b.status NOT IN {CLOSED} OR b.merge_pending = 1)"
EDITABLE = ("title", "description", "acceptance", "notes", "type", "priority", "metadata")


def _releases(status: str, merge_pending: int) -> bool:
    """Whether a bead in this state lets its dependents go: closed, with nothing waiting to land."""
    return status in CLOSED and not merge_pending


def _snapshot(row: sqlite3.Row) -> dict[str, Any]:
    return {"status": row["status"], "assignee": row["assignee"], "lease_expires_at": row["lease_expires_at"]}


class BeadRepo:
    def __init__(self, db: Database, prefix: str) -> None:
        self.db = db
        self.prefix = prefix
        # Run inside the transaction that cancels a bead (the store settles convoys there).
        self.on_cancelled: list[Callable[[Tx, str, Sequence[str]], object]] = []
        # Run after the commit that ends a bead run without landing: (bead id, the agent that held it, outcome:
        # released, blocked, cancelled or handed back). The town's traces close the run's root span there.
        self.on_run_ended: list[Callable[[str, str, str], object]] = []

    def run_ended(self, bead_id: str, holder: str | None, outcome: str) -> None:
        if holder:
            for hook in self.on_run_ended:
                hook(bead_id, holder, outcome)

    # -- reads -------------------------------------------------------------------------------------
    def _row(self, bead_id: str) -> sqlite3.Row:
        row = self.db.query_one("SELECT * FROM beads WHERE id = ?", (bead_id,))
        if row is None:
            raise NotFound(f"no bead {bead_id!r}; find ids with bead_list or bead_ready")
        return row

    def get(self, bead_id: str) -> Bead:
        row = self._row(bead_id)
        labels = [
            r["label"] for r in self.db.query("SELECT label FROM labels WHERE bead_id=? ORDER BY label", (bead_id,))
        ]
        deps = [
            Dep(bead_id=r["bead_id"], depends_on=r["depends_on"], kind=r["kind"])
            for r in self.db.query(
                "SELECT bead_id, depends_on, kind FROM deps WHERE bead_id=? OR depends_on=? ORDER BY created_at",
                (bead_id, bead_id),
            )
        ]
        blocked_by = [
            r["id"]
            for r in self.db.query(
                f"""SELECT b.id FROM deps d JOIN beads b ON b.id = d.depends_on
                    WHERE d.bead_id=? AND d.kind='blocks' AND {BLOCKING}""",
                (bead_id,),
            )
        ]
        comments = [
            rows.comment(r) for r in self.db.query("SELECT * FROM comments WHERE bead_id=? ORDER BY id", (bead_id,))
        ]
        result = rows.loads(row["result"])
        return Bead(
            id=row["id"],
            title=row["title"],
            description=row["description"],
            acceptance=row["acceptance"],
            notes=row["notes"],
            type=row["type"],
            priority=row["priority"],
            status=row["status"],
            labels=labels,
            assignee=row["assignee"],
            lease_expires_at=row["lease_expires_at"],
            attempts=row["attempts"],
            result=BeadResult(**result) if result else None,
            created_by=row["created_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            closed_at=row["closed_at"],
            metadata=rows.loads(row["metadata"]) or {},
            awaiting_merge=bool(row["merge_pending"]),
            blocked_by=blocked_by,
            deps=deps,
            comments=comments,
        )

    def exists(self, bead_id: str) -> bool:
        return self.db.query_one("SELECT 1 FROM beads WHERE id=?", (bead_id,)) is not None

    def search(
        self,
        *,
        status: Sequence[str] | None = None,
        assignee: str | None = None,
        label: str | None = None,
        type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[BeadSummary]:
        where: list[str] = []
        params: list[Any] = []
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(status)
        if assignee:
            where.append("assignee = ?")
            params.append(assignee)
        if type:
            where.append("type = ?")
            params.append(type)
        if label:
            where.append("id IN (SELECT bead_id FROM labels WHERE label = ?)")
            params.append(label)
        sql = f"SELECT {SUMMARY_COLS} FROM beads"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY priority, created_at, id LIMIT ? OFFSET ?"
        return [rows.summary(r) for r in self.db.query(sql, (*params, limit, offset))]

    def ready(
        self, *, limit: int = 20, now: str | None = None, label: str | None = None, unlabelled: str | None = None
    ) -> list[BeadSummary]:
        """Open, unblocked, unclaimed beads — plus in-progress ones whose lease ran out — by priority, then age.

        `label` keeps only beads with that label; `unlabelled` (a prefix such as "rig:") only beads with no
        label starting with it."""
        found = glance.ready_rows(self.db, limit=limit, now=now or now_iso(), label=label, unlabelled=unlabelled)
        return [rows.summary(r) for r in found]

    def created_since(self, agent: str, since: str) -> int:
        """How many beads `agent` created at or after `since` (an ISO time): its rate of side work."""
        row = self.db.query_one("SELECT count(*) AS n FROM beads WHERE created_by=? AND created_at>=?", (agent, since))
        return int(row["n"]) if row else 0

    def held_by(self, agent: str) -> list[BeadSummary]:
        return [
            rows.summary(r)
            for r in self.db.query(
                f"SELECT {SUMMARY_COLS} FROM beads WHERE assignee=? AND status='in_progress' ORDER BY priority",
                (agent,),
            )
        ]

    def expired(self, now: str | None = None) -> list[BeadSummary]:
        return [
            rows.summary(r)
            for r in self.db.query(
                f"SELECT {SUMMARY_COLS} FROM beads WHERE status='in_progress' AND lease_expires_at < ?",
                (now or now_iso(),),
            )
        ]

    def counts(self) -> dict[str, int]:
        """Beads by status (non-zero only), from counts the store maintains: a few key reads at any size."""
        return {k: n for k, n in maintained.under(self.db.conn, "beads:").items() if k in maintained.BEAD_STATUSES}

    def awaiting_merge_count(self) -> int:
        return maintained.one(self.db.conn, "beads:merge_pending")

    def ready_count(self) -> int:
        """Open, unblocked, unclaimed beads (not those whose lease ran out), from the maintained count."""
        return maintained.one(self.db.conn, "beads:ready")

    # -- create ------------------------------------------------------------------------------------
    def create(self, actor: str, **fields: Any) -> Bead:
        """Create a bead (and its labels and dependencies) in one transaction; `fields` are `_insert`'s."""
        with self.db.write() as tx:
            bead_id = self._insert(tx, actor, **fields)
        return self.get(bead_id)

    def _insert(
        self,
        tx: Tx,
        actor: str,
        *,
        title: str,
        description: str = "",
        acceptance: str = "",
        notes: str = "",
        type: str = "task",
        priority: int = 2,
        labels: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
        parent: str | None = None,
        deps: Sequence[tuple[str, str]] = (),
    ) -> str:
        """One bead with its labels, parent and dependencies, inside the caller's transaction; returns its id."""
        if parent is not None:
            prow = tx.execute("SELECT child_count FROM beads WHERE id=?", (parent,)).fetchone()
            if prow is None:
                raise NotFound(f"no parent bead {parent!r}; create it first or drop `parent`")
            n = prow["child_count"] + 1
            bead_id = f"{parent}.{n}"
            tx.execute("UPDATE beads SET child_count=? WHERE id=?", (n, parent))
        else:
            bead_id = self._new_id(tx)
        tx.execute(
            """INSERT INTO beads (id, title, description, acceptance, notes, type, priority, created_by,
               created_at, updated_at, metadata) VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
            (
                bead_id,
                title,
                description,
                acceptance,
                notes,
                type,
                priority,
                actor,
                tx.now,
                tx.now,
                json.dumps(metadata or {}),
            ),
        )
        for label in sorted(set(labels)):
            tx.execute("INSERT INTO labels (bead_id, label) VALUES (?,?)", (bead_id, label))
        if parent is not None:
            self._link(tx, actor, bead_id, parent, DepKind.parent)
        for kind, other in deps:
            self._link(tx, actor, bead_id, other, DepKind(kind))
        tx.event(
            actor,
            Verb.bead_created,
            bead_id=bead_id,
            after={"title": title, "type": type, "priority": priority, "status": "open"},
        )
        return bead_id

    def _new_id(self, tx: Tx) -> str:
        count = tx.execute("SELECT coalesce(max(rowid), 0) FROM beads").fetchone()[0]
        length = hash_length(count)
        for attempt in range(20):
            candidate = f"{self.prefix}-{random_hash(length + attempt // 5)}"
            if tx.execute("SELECT 1 FROM beads WHERE id=?", (candidate,)).fetchone() is None:
                return candidate
        raise Conflict("could not find a free bead id after 20 tries; retry")  # astronomically unlikely

    # -- dependencies ------------------------------------------------------------------------------
    def link(self, actor: str, bead_id: str, other: str, kind: DepKind) -> Dep:
        with self.db.write() as tx:
            dep = self._link(tx, actor, bead_id, other, kind)
        return dep

    def _link(self, tx: Tx, actor: str, bead_id: str, other: str, kind: DepKind) -> Dep:
        if bead_id == other:
            raise InvalidInput(f"a bead cannot depend on itself ({bead_id})")
        found = {
            r["id"]: r
            for r in tx.execute("SELECT id, status, merge_pending FROM beads WHERE id IN (?,?)", (bead_id, other))
        }
        for needed in (bead_id, other):
            if needed not in found:
                raise NotFound(f"no bead {needed!r}; check the id with bead_show")
        if tx.execute(
            "SELECT 1 FROM deps WHERE bead_id=? AND depends_on=? AND kind=?", (bead_id, other, kind.value)
        ).fetchone():
            return Dep(bead_id=bead_id, depends_on=other, kind=kind)
        if kind is DepKind.blocks:
            cycle = tx.execute(
                """WITH RECURSIVE up(id) AS (
                       SELECT depends_on FROM deps WHERE bead_id=? AND kind='blocks'
                       UNION SELECT d.depends_on FROM deps d JOIN up ON d.bead_id = up.id WHERE d.kind='blocks')
                   SELECT 1 FROM up WHERE id=? LIMIT 1""",
                (other, bead_id),
            ).fetchone()
            if cycle:
                raise InvalidInput(
                    f"{other} already waits on {bead_id} (directly or through others); "
                    f"making {bead_id} wait on {other} would be a cycle"
                )
        tx.execute(
            "INSERT INTO deps (bead_id, depends_on, kind, created_at, created_by) VALUES (?,?,?,?,?)",
            (bead_id, other, kind.value, tx.now, actor),
        )
        if kind is DepKind.blocks and not _releases(found[other]["status"], found[other]["merge_pending"]):
            tx.execute("UPDATE beads SET open_blockers = open_blockers + 1 WHERE id=?", (bead_id,))
        tx.event(actor, Verb.bead_linked, bead_id=bead_id, after={"depends_on": other, "kind": kind.value})
        return Dep(bead_id=bead_id, depends_on=other, kind=kind)

    def unlink(self, actor: str, bead_id: str, other: str, kind: DepKind) -> None:
        with self.db.write() as tx:
            cur = tx.execute(
                "DELETE FROM deps WHERE bead_id=? AND depends_on=? AND kind=?", (bead_id, other, kind.value)
            )
            if cur.rowcount == 0:
                raise NotFound(f"{bead_id} has no {kind.value} link to {other}")
            if kind is DepKind.blocks:
                st = tx.execute("SELECT status, merge_pending FROM beads WHERE id=?", (other,)).fetchone()
                if st and not _releases(st["status"], st["merge_pending"]):
                    tx.execute("UPDATE beads SET open_blockers = open_blockers - 1 WHERE id=?", (bead_id,))
            tx.event(actor, Verb.bead_unlinked, bead_id=bead_id, before={"depends_on": other, "kind": kind.value})

    # -- claims and leases -------------------------------------------------------------------------
    def claim(self, agent: str, bead_id: str | None, lease_seconds: float) -> Bead:
        """Compare-and-swap: open+unblocked (or lease expired) → in_progress held by `agent`."""
        return self.get(self.claim_brief(agent, bead_id, lease_seconds).id)

    def claim_brief(self, agent: str, bead_id: str | None, lease_seconds: float) -> BeadBrief:
        """`claim`, returning the claimed bead's new state from the claim's own UPDATE (no re-read)."""
        with self.db.write() as tx:
            return self._claim(tx, agent, bead_id, lease_seconds)

    def brief(self, bead_id: str) -> BeadBrief:
        return self._brief(self.db.conn, bead_id)

    def _brief(self, conn: sqlite3.Connection, bead_id: str) -> BeadBrief:
        row = conn.execute(
            f"SELECT {SUMMARY_COLS}, lease_expires_at, attempts FROM beads WHERE id=?", (bead_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no bead {bead_id!r}; find ids with bead_list or bead_ready")
        return BeadBrief(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row

    def _claim(self, tx: Tx, agent: str, bead_id: str | None, lease_seconds: float) -> BeadBrief:
        if bead_id is None:
            row = self._top_claimable(tx)
            bead_id = row["id"]
        else:
            row = tx.execute("SELECT * FROM beads WHERE id=?", (bead_id,)).fetchone()
        if row is None:
            raise NotFound(f"no bead {bead_id!r}; pick one with bead_ready")
        lease = now_iso(tx.at + lease_seconds)
        status, holder = row["status"], row["assignee"]
        takeover_from = None
        if status == "in_progress" and holder == agent:
            # Claiming what you already hold is a renewal, not an error.
            tx.execute("UPDATE beads SET lease_expires_at=? WHERE id=?", (lease, bead_id))
            attempts = row["attempts"]
        else:
            if status == "in_progress":
                if row["lease_expires_at"] and row["lease_expires_at"] >= tx.now:
                    raise Conflict(
                        f"bead {bead_id} is claimed by {holder} until {row['lease_expires_at'][11:19]} UTC; "
                        "pick another with bead_ready"
                    )
                takeover_from = holder
            elif status != "open":
                raise InvalidTransition(
                    f"bead {bead_id} is {status}, not open; only open beads can be claimed (see bead_ready)"
                )
            elif row["open_blockers"] > 0:
                blockers = self._open_blockers(tx, bead_id)
                raise Conflict(f"bead {bead_id} waits on {', '.join(blockers)}; pick another with bead_ready")
            took = 1 if takeover_from else 0
            claimed = tx.execute(  # no RETURNING (a scratch table): the row was read under this write lock
                """UPDATE beads SET status='in_progress', assignee=?, lease_expires_at=?, updated_at=?,
                   attempts = attempts + ? WHERE id=? AND status=? AND assignee IS ?""",
                (agent, lease, tx.now, took, bead_id, status, holder),
            )
            if claimed.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; kept as the CAS guard
                raise Conflict(f"bead {bead_id} changed while claiming; retry")
            attempts = row["attempts"] + took
            tx.event(
                agent,
                Verb.bead_taken_over if takeover_from else Verb.bead_claimed,
                bead_id=bead_id,
                agent=agent,
                before=_snapshot(row),
                after={"status": "in_progress", "assignee": agent, "lease_expires_at": lease},
            )
        return BeadBrief(
            id=row["id"],
            title=row["title"],
            status=BeadStatus.in_progress,
            priority=row["priority"],
            assignee=agent,
            lease_expires_at=lease,
            attempts=attempts,
        )

    def _top_claimable(self, tx: Tx) -> sqlite3.Row:
        """The best claimable bead, whole: the top ready one or the top one whose lease ran out, by (priority,
        created_at, id). Each comes from its own index; the lapsed leases are sorted only when there is one
        (a UNION with an outer ORDER BY, or a sort that finds nothing, still makes SQLite build scratch tables)."""
        ready = tx.execute(
            """SELECT * FROM beads INDEXED BY beads_ready WHERE status='open' AND open_blockers=0
               AND assignee IS NULL ORDER BY priority, created_at, id LIMIT 1"""
        ).fetchone()
        lapsed = None
        if tx.execute(
            "SELECT 1 FROM beads INDEXED BY beads_leases WHERE status='in_progress' AND lease_expires_at < ? LIMIT 1",
            (tx.now,),
        ).fetchone():
            lapsed = tx.execute(
                """SELECT * FROM beads INDEXED BY beads_leases WHERE status='in_progress' AND lease_expires_at < ?
                   ORDER BY priority, created_at, id LIMIT 1""",
                (tx.now,),
            ).fetchone()
        found = [row for row in (ready, lapsed) if row is not None]
        if not found:
            raise NotFound("no ready beads right now; check back later or create one with bead_create")
        return min(found, key=lambda row: (row["priority"], row["created_at"], row["id"]))

    def _blocks_any(self, tx: Tx, bead_id: str) -> bool:
        """Whether any bead waits on `bead_id` (most do not: the update of their counts, whose IN makes SQLite
        build a scratch table, is then skipped)."""
        found = tx.execute("SELECT 1 FROM deps WHERE depends_on=? AND kind='blocks' LIMIT 1", (bead_id,)).fetchone()
        return found is not None

    def _open_blockers(self, tx: Tx, bead_id: str) -> list[str]:
        return [
            r["id"]
            for r in tx.execute(
                f"""SELECT b.id FROM deps d JOIN beads b ON b.id=d.depends_on
                    WHERE d.bead_id=? AND d.kind='blocks' AND {BLOCKING}""",
                (bead_id,),
            )
        ]

    # -- transitions -------------------------------------------------------------------------------
    def _locked_row(self, tx: Tx, bead_id: str, require_assignee: str | None, verb: str) -> sqlite3.Row:
        row = tx.execute("SELECT * FROM beads WHERE id=?", (bead_id,)).fetchone()
        if row is None:
            raise NotFound(f"no bead {bead_id!r}; find ids with bead_list")
        if require_assignee is not None and row["assignee"] != require_assignee:
            holder = f"it is claimed by {row['assignee']}" if row["assignee"] else "it is not claimed by you"
            raise Forbidden(f"{require_assignee} may not {verb} {bead_id}: {holder}")
        return row

    def _set_status(self, tx: Tx, row: sqlite3.Row, status: BeadStatus, **extra: Any) -> None:
        """Change status; dependents are released (or held again) only when "closed with nothing pending" flips."""
        old = row["status"]
        sets = {"status": status.value, "updated_at": tx.now, **extra}
        if status in CLOSED_STATUSES and old not in CLOSED:
            sets["closed_at"] = tx.now
        elif status not in CLOSED_STATUSES and old in CLOSED:
            sets["closed_at"] = None
        was = _releases(old, row["merge_pending"])
        now = _releases(status.value, sets.get("merge_pending", row["merge_pending"]))
        released = int(now) - int(was)  # 1: it stops blocking its dependents; -1: it blocks them again
        if released and self._blocks_any(tx, row["id"]):
            tx.execute(
                "UPDATE beads SET open_blockers = open_blockers - ? WHERE id IN "
                "(SELECT bead_id FROM deps WHERE depends_on=? AND kind='blocks')",
                (released, row["id"]),
            )
        cols = ", ".join(f"{k}=?" for k in sets)
        tx.execute(f"UPDATE beads SET {cols} WHERE id=?", (*sets.values(), row["id"]))

    def complete(
        self,
        actor: str,
        bead_id: str,
        result: BeadResult,
        require_assignee: str | None,
        *,
        merge_pending: bool = False,
    ) -> Bead:
        """in_progress → done. With `merge_pending` (work handed in for the merge queue) its dependents keep
        waiting until the merge queue says the commit is on main."""
        return self.get(self.complete_brief(actor, bead_id, result, require_assignee, merge_pending=merge_pending).id)

    def complete_brief(
        self, actor: str, bead_id: str, result: BeadResult, require_assignee: str | None, *, merge_pending: bool = False
    ) -> BeadBrief:
        """`complete`, returning the bead's new state from the completing transaction (no re-read)."""
        with self.db.write() as tx:
            row = self._complete(tx, actor, bead_id, result, require_assignee, merge_pending)
        return BeadBrief(
            id=row["id"],
            title=row["title"],
            status=BeadStatus.done,
            priority=row["priority"],
            assignee=row["assignee"],
            lease_expires_at=None,
            attempts=row["attempts"],
        )

    def _complete(
        self, tx: Tx, actor: str, bead_id: str, result: BeadResult, require_assignee: str | None, merge_pending: bool
    ) -> sqlite3.Row:
        """in_progress -> done inside `tx`; returns the bead's row as it was before."""
        row = self._locked_row(tx, bead_id, require_assignee, "complete")
        if row["status"] != "in_progress":
            raise InvalidTransition(
                f"bead {bead_id} is {row['status']}; only an in_progress bead can be completed (claim it first)"
            )
        self._set_status(
            tx,
            row,
            BeadStatus.done,
            result=result.model_dump_json(),
            lease_expires_at=None,
            merge_pending=int(merge_pending),
        )
        tx.event(
            actor,
            Verb.bead_completed,
            bead_id=bead_id,
            agent=row["assignee"],
            before=_snapshot(row),
            after={"status": "done", "result": result.model_dump(), "merge_pending": merge_pending},
        )
        return row

    def release(
        self,
        actor: str,
        bead_id: str,
        reason: str,
        require_assignee: str | None,
        *,
        block_after: int | None = None,
        count_attempt: bool = True,
    ) -> Bead:
        """in_progress → open (attempts + 1 unless `count_attempt` is off: an operator's stop is not a failure);
        with `block_after`, → blocked once attempts reach it."""
        with self.db.write() as tx:
            row = self._locked_row(tx, bead_id, require_assignee, "release")
            if row["status"] != "in_progress":
                raise InvalidTransition(f"bead {bead_id} is {row['status']}, not in_progress; nothing to release")
            attempts = row["attempts"] + (1 if count_attempt else 0)
            target = BeadStatus.open
            if block_after is not None and attempts >= block_after:
                target = BeadStatus.blocked
            self._set_status(tx, row, target, assignee=None, lease_expires_at=None, attempts=attempts)
            tx.event(
                actor,
                Verb.bead_released if target is BeadStatus.open else Verb.bead_blocked,
                bead_id=bead_id,
                agent=row["assignee"],
                before=_snapshot(row),
                after={"status": target.value, "reason": reason, "attempts": attempts},
            )
        self.run_ended(bead_id, row["assignee"], "released" if target is BeadStatus.open else "blocked")
        return self.get(bead_id)

    def transition(
        self, actor: str, bead_id: str, status: BeadStatus, reason: str, require_assignee: str | None
    ) -> Bead:
        """Block, unblock, cancel or reopen. Claiming and completing have their own methods."""
        with self.db.write() as tx:
            row = self._locked_row(tx, bead_id, require_assignee, f"set status {status.value} on")
            old = BeadStatus(row["status"])
            allowed = {
                BeadStatus.blocked: {BeadStatus.open, BeadStatus.in_progress},
                BeadStatus.open: {BeadStatus.blocked, BeadStatus.done, BeadStatus.cancelled},
                BeadStatus.cancelled: {BeadStatus.open, BeadStatus.in_progress, BeadStatus.blocked},
            }
            if status not in allowed:
                how = "bead_claim" if status is BeadStatus.in_progress else "bead_complete"
                raise InvalidTransition(f"use {how} to move a bead to {status.value}")
            if old not in allowed[status]:
                raise InvalidTransition(
                    f"bead {bead_id} is {old.value}; it cannot become {status.value} "
                    f"(allowed from: {', '.join(sorted(s.value for s in allowed[status]))})"
                )
            if status is BeadStatus.blocked and not reason.strip():
                raise InvalidInput("blocking a bead needs a reason that says what it waits on")
            extra: dict[str, Any] = {"lease_expires_at": None, "assignee": None}
            if reason:
                note = f"[{tx.now[:16]} {actor}] {status.value}: {reason}"
                extra["notes"] = (row["notes"] + "\n" + note).strip()
            self._set_status(tx, row, status, **extra)
            tx.event(
                actor,
                Verb.of_bead_status(status),
                bead_id=bead_id,
                before=_snapshot(row),
                after={"status": status.value, "reason": reason},
            )
            if status is BeadStatus.cancelled:
                for hook in self.on_cancelled:
                    hook(tx, actor, [bead_id])
        if old is BeadStatus.in_progress:
            self.run_ended(bead_id, row["assignee"], status.value)
        return self.get(bead_id)

    def edit(self, actor: str, bead_id: str, fields: dict[str, Any], require_assignee: str | None) -> Bead:
        """Change title, description, acceptance, notes, type, priority, metadata and labels."""
        with self.db.write() as tx:
            row = self._locked_row(tx, bead_id, require_assignee, "update")
            sets: dict[str, Any] = {}
            before: dict[str, Any] = {}
            for key in EDITABLE:
                if key in fields and fields[key] is not None:
                    value = fields[key]
                    sets[key] = json.dumps(value) if key == "metadata" else value
                    before[key] = row[key]
            labels = fields.get("labels")
            if labels is not None:
                tx.execute("DELETE FROM labels WHERE bead_id=?", (bead_id,))
                for label in sorted(set(labels)):
                    tx.execute("INSERT INTO labels (bead_id, label) VALUES (?,?)", (bead_id, label))
            if not sets and labels is None:
                raise InvalidInput("nothing to update: pass at least one field to change")
            sets["updated_at"] = tx.now
            cols = ", ".join(f"{k}=?" for k in sets)
            tx.execute(f"UPDATE beads SET {cols} WHERE id=?", (*sets.values(), bead_id))
            after = {k: fields[k] for k in (*EDITABLE, "labels") if fields.get(k) is not None}
            tx.event(actor, Verb.bead_updated, bead_id=bead_id, before=before, after=after)
        return self.get(bead_id)

    def comment(self, actor: str, bead_id: str, body: str) -> int:
        with self.db.write() as tx:
            if tx.execute("SELECT 1 FROM beads WHERE id=?", (bead_id,)).fetchone() is None:
                raise NotFound(f"no bead {bead_id!r}; find ids with bead_list")
            cur = tx.execute(
                "INSERT INTO comments (bead_id, author, body, created_at) VALUES (?,?,?,?)",
                (bead_id, actor, body, tx.now),
            )
            tx.execute("UPDATE beads SET updated_at=? WHERE id=?", (tx.now, bead_id))
            tx.event(actor, Verb.bead_commented, bead_id=bead_id, after={"comment_id": cur.lastrowid})
            return int(cur.lastrowid or 0)
