"""SQL for the operator's views: the bead board by column with filters and pages, what needs a human, spend
by bead, convoy, role and rig (and over time), the figures `/metrics` exports, and the operator's login token.

Reads only, except the login token. Each query is an indexed read or one aggregate, so a page stays fast at
100k beads (`benchmarks/bench_dashboard.py`). Model spend is attributed to a bead through the claim events:
a usage row belongs to the bead its agent last claimed before the request.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gastown_mcp.models import Verb
from gastown_mcp.store import rows
from gastown_mcp.store.agents import secret_hash
from gastown_mcp.store.db import Database

OPERATOR_TOKEN_PREFIX = "gto_"

# The board's columns and what puts a bead in each (and the index that serves its order).
COLUMNS: dict[str, str] = {
    "ready": "status = 'open' AND open_blockers = 0 AND assignee IS NULL",
    "waiting": "status = 'open' AND (open_blockers > 0 OR assignee IS NOT NULL)",
    "in_progress": "status = 'in_progress'",
    "awaiting_merge": "status = 'done' AND merge_pending = 1",
    "merged": "status = 'done' AND merge_pending = 0",
    "blocked": "status = 'blocked'",
    "cancelled": "status = 'cancelled'",
}
ORDER: dict[str, str] = {
    "merged": "closed_at DESC, rowid DESC",  # the order of the beads_merged index
    "cancelled": "closed_at DESC, rowid DESC",
}
DEFAULT_ORDER = "priority, created_at, id"
CARD_COLS = "id, title, status, priority, assignee, type, attempts, updated_at, closed_at"
TOKENS = "(u.input_tokens + u.output_tokens + u.cache_creation_tokens + u.cache_read_tokens)"
# The bead a usage row is spent on: the one its agent last claimed at or before the request.
BEAD_OF_USAGE = (
    "(SELECT e.bead_id FROM events e INDEXED BY events_claims WHERE e.verb = 'bead.claimed' "
    "AND e.actor = u.agent AND e.at <= u.at ORDER BY e.at DESC LIMIT 1)"
)


@dataclass(frozen=True)
class BoardFilter:
    """What the board shows: every field optional, all given ones must hold."""

    rig: str | None = None
    label: str | None = None
    assignee: str | None = None
    type: str | None = None
    priority: int | None = None
    text: str | None = None  # in the title, or the exact id

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        for label in (f"rig:{self.rig}" if self.rig else None, self.label):
            if label:
                parts.append("id IN (SELECT bead_id FROM labels WHERE label = ?)")
                params.append(label)
        if self.assignee:
            parts.append("assignee = ?")
            params.append(self.assignee)
        if self.type:
            parts.append("type = ?")
            params.append(self.type)
        if self.priority is not None:
            parts.append("priority = ?")
            params.append(self.priority)
        if self.text:
            parts.append("(id = ? OR title LIKE ? ESCAPE '\\')")
            escaped = self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params += [self.text, f"%{escaped}%"]
        return (" AND ".join(parts) or "1"), params


def _column_of(r: sqlite3.Row) -> str:
    """The board column of a bead row (the same rule as COLUMNS, in Python)."""
    status = r["status"]
    if status == "open":
        return "ready" if r["open_blockers"] == 0 and r["assignee"] is None else "waiting"
    if status == "done":
        return "awaiting_merge" if r["merge_pending"] else "merged"
    return str(status)


class OverviewRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the board -------------------------------------------------------------------------------------
    def board_page(self, column: str, where: BoardFilter, limit: int, offset: int) -> list[sqlite3.Row]:
        filt, params = where.where()
        order = ORDER.get(column, DEFAULT_ORDER)
        sql = f"SELECT {CARD_COLS} FROM beads WHERE {COLUMNS[column]} AND {filt} ORDER BY {order} LIMIT ? OFFSET ?"
        return self.db.query(sql, (*params, limit, offset))

    def board_filtered(
        self, where: BoardFilter, columns: Sequence[str], limit: int, offset: int
    ) -> tuple[dict[str, int], dict[str, list[sqlite3.Row]]]:
        """Counts and pages of every column under a filter from one pass over the matching beads (a filter such
        as a title search cannot use an index, so it is applied once, not once per column)."""
        filt, params = where.where()
        found = self.db.query(
            f"""SELECT id, status, priority, created_at, closed_at, open_blockers, assignee, merge_pending,
                       rowid AS rid FROM beads WHERE {filt}""",
            params,
        )
        buckets: dict[str, list[sqlite3.Row]] = {c: [] for c in COLUMNS}
        for r in found:
            buckets[_column_of(r)].append(r)
        pages: dict[str, list[sqlite3.Row]] = {}
        for c in columns:
            if c in ORDER:
                ordered = sorted(buckets[c], key=lambda r: (r["closed_at"] or "", r["rid"]), reverse=True)
            else:
                ordered = sorted(buckets[c], key=lambda r: (r["priority"], r["created_at"], r["id"]))
            ids = [r["id"] for r in ordered[offset : offset + limit]]
            marks = ",".join("?" * len(ids))
            rows = {r["id"]: r for r in self.db.query(f"SELECT {CARD_COLS} FROM beads WHERE id IN ({marks})", ids)}
            pages[c] = [rows[i] for i in ids if i in rows]
        return {c: len(b) for c, b in buckets.items()}, pages

    def board_counts(self, where: BoardFilter) -> dict[str, int]:
        if where == BoardFilter():
            return self._all_counts()
        filt, params = where.where()
        cases = " ".join(f"WHEN {cond} THEN '{name}'" for name, cond in COLUMNS.items())
        found = self.db.query(
            f"SELECT CASE {cases} END AS col, count(*) AS n FROM beads WHERE {filt} GROUP BY col", params
        )
        counts = dict.fromkeys(COLUMNS, 0)
        counts.update({r["col"]: r["n"] for r in found if r["col"]})
        return counts

    def _all_counts(self) -> dict[str, int]:
        """Every column's count from indexes alone (no table scan): statuses from the status index, ready and
        awaiting merge from their partial indexes."""
        by_status = {
            r["status"]: r["n"]
            for r in self.db.query("SELECT status, count(*) AS n FROM beads INDEXED BY beads_status GROUP BY status")
        }
        ready = self.db.query_one(f"SELECT count(*) AS n FROM beads INDEXED BY beads_ready WHERE {COLUMNS['ready']}")
        awaiting = self.db.query_one(
            f"SELECT count(*) AS n FROM beads INDEXED BY beads_awaiting_merge WHERE {COLUMNS['awaiting_merge']}"
        )
        r, a = (int(ready["n"]) if ready else 0), (int(awaiting["n"]) if awaiting else 0)
        return {
            "ready": r,
            "waiting": by_status.get("open", 0) - r,
            "in_progress": by_status.get("in_progress", 0),
            "awaiting_merge": a,
            "merged": by_status.get("done", 0) - a,
            "blocked": by_status.get("blocked", 0),
            "cancelled": by_status.get("cancelled", 0),
        }

    def labels_of(self, bead_ids: Sequence[str]) -> dict[str, list[str]]:
        if not bead_ids:
            return {}
        marks = ",".join("?" * len(bead_ids))
        out: dict[str, list[str]] = {}
        for r in self.db.query(
            f"SELECT bead_id, label FROM labels WHERE bead_id IN ({marks}) ORDER BY label", bead_ids
        ):
            out.setdefault(r["bead_id"], []).append(r["label"])
        return out

    # -- what needs a human ----------------------------------------------------------------------------
    def blocked(self, limit: int) -> list[dict[str, Any]]:
        """Blocked beads, most urgent first (the status index's order), with the reason of the event that
        blocked them."""
        found = self.db.query(
            f"SELECT {CARD_COLS} FROM beads WHERE status = 'blocked' ORDER BY priority, created_at LIMIT ?", (limit,)
        )
        out = []
        for r in found:
            ev = self.db.query_one(
                "SELECT actor, at, after FROM events WHERE bead_id = ? AND verb = ? ORDER BY id DESC LIMIT 1",
                (r["id"], Verb.bead_blocked.value),
            )
            after = rows.loads(ev["after"]) if ev else None
            reason = str((after or {}).get("reason") or "")
            out.append({**dict(r), "reason": reason, "blocked_by": ev["actor"] if ev else None})
        return out

    def failed_merges(self, limit: int) -> list[sqlite3.Row]:
        """Requests that failed or conflicted and were not followed by another request for their bead."""
        return self.db.query(
            """SELECT m.*, (SELECT b.title FROM beads b WHERE b.id = m.bead_id) AS title FROM merge_requests m
               WHERE m.state IN ('failed', 'conflicted')
                 AND NOT EXISTS (SELECT 1 FROM merge_requests n WHERE n.bead_id = m.bead_id AND n.id > m.id)
               ORDER BY m.updated_at DESC LIMIT ?""",
            (limit,),
        )

    def unread_mail(self, recipients: Sequence[str], limit: int) -> list[sqlite3.Row]:
        if not recipients:
            return []
        marks = ",".join("?" * len(recipients))
        return self.db.query(
            f"""SELECT * FROM messages WHERE kind = 'mail' AND state != 'acknowledged' AND recipient IN ({marks})
                ORDER BY id DESC LIMIT ?""",
            (*recipients, limit),
        )

    def merge_requests_of(self, bead_id: str) -> list[sqlite3.Row]:
        return self.db.query("SELECT * FROM merge_requests WHERE bead_id = ? ORDER BY id DESC", (bead_id,))

    # -- spend -----------------------------------------------------------------------------------------
    def usage_by(self, by: str, limit: int) -> list[sqlite3.Row]:
        """Requests, tokens and USD grouped by bead, convoy, role, rig or agent, dearest first."""
        key = {
            "agent": "u.agent",
            "rig": "coalesce(u.rig, '')",
            "role": "coalesce((SELECT a.role FROM agents a WHERE a.name = u.agent), '')",
            "bead": f"coalesce({BEAD_OF_USAGE}, '')",
            "convoy": (
                f"coalesce((SELECT d.depends_on FROM deps d WHERE d.bead_id = {BEAD_OF_USAGE} "
                "AND d.kind = 'parent' LIMIT 1), '')"
            ),
        }[by]
        return self.db.query(
            f"""SELECT {key} AS key, count(*) AS requests, sum(u.outcome = 'refused') AS refused,
                       sum(u.input_tokens) AS input_tokens, sum(u.output_tokens) AS output_tokens,
                       sum(u.cache_creation_tokens) AS cache_creation_tokens,
                       sum(u.cache_read_tokens) AS cache_read_tokens, sum({TOKENS}) AS tokens,
                       sum(u.cost_usd) AS cost_usd, max(u.at) AS last_at
                FROM usage u GROUP BY key ORDER BY cost_usd DESC, tokens DESC, key LIMIT ?""",
            (limit,),
        )

    def bead_usage(self, bead_id: str) -> sqlite3.Row | None:
        return self.db.query_one(
            f"""SELECT count(*) AS requests, coalesce(sum({TOKENS}), 0) AS tokens,
                       coalesce(sum(u.cost_usd), 0) AS cost_usd
                FROM usage u WHERE u.agent IN (SELECT actor FROM events WHERE bead_id = ? AND verb = 'bead.claimed')
                  AND {BEAD_OF_USAGE} = ?""",
            (bead_id, bead_id),
        )

    def usage_series(self, width: int) -> list[sqlite3.Row]:
        """Tokens and USD per time bucket: `width` leading characters of the ISO time (13 = hour)."""
        return self.db.query(
            f"""SELECT substr(u.at, 1, ?) AS bucket, count(*) AS requests, sum({TOKENS}) AS tokens,
                       sum(u.cost_usd) AS cost_usd FROM usage u INDEXED BY usage_at GROUP BY bucket ORDER BY bucket""",
            (width,),
        )

    def usage_span(self) -> tuple[str | None, str | None]:
        row = self.db.query_one("SELECT min(at) AS first, max(at) AS last FROM usage INDEXED BY usage_at")
        return (row["first"], row["last"]) if row else (None, None)

    # -- metrics ---------------------------------------------------------------------------------------
    def usage_totals(self) -> list[sqlite3.Row]:
        """Per agent with its role and rig: requests by outcome, tokens by kind, USD."""
        return self.db.query(
            """SELECT u.agent, coalesce(a.role, '') AS agent_role, coalesce(u.rig, '') AS usage_rig, u.outcome,
                      count(*) AS requests, sum(u.input_tokens) AS input_tokens, sum(u.output_tokens) AS output_tokens,
                      sum(u.cache_creation_tokens) AS cache_creation_tokens,
                      sum(u.cache_read_tokens) AS cache_read_tokens, sum(u.cost_usd) AS cost_usd
               FROM usage u LEFT JOIN agents a ON a.name = u.agent
               GROUP BY u.agent, agent_role, usage_rig, u.outcome ORDER BY u.agent"""
        )

    def duration_buckets(self, bounds_ms: Sequence[float]) -> tuple[list[int], int, float]:
        """Cumulative counts of metered requests at or under each bound, the count and the sum (ms)."""
        cols = ", ".join(f"sum(duration_ms <= {float(b)!r})" for b in bounds_ms)
        row = self.db.query_one(
            f"SELECT {cols + ', ' if cols else ''}count(*) AS n, coalesce(sum(duration_ms), 0) AS total "
            "FROM usage WHERE outcome != 'refused'"
        )
        if row is None:
            return [0] * len(bounds_ms), 0, 0.0
        return [int(row[i] or 0) for i in range(len(bounds_ms))], int(row["n"]), float(row["total"])

    def claims(self) -> int:
        """Claims ever made (takeovers of an expired lease not counted)."""
        row = self.db.query_one("SELECT count(*) AS n FROM events INDEXED BY events_claims WHERE verb = 'bead.claimed'")
        return int(row["n"]) if row else 0

    def expired_leases(self, now: str) -> int:
        row = self.db.query_one(
            "SELECT count(*) AS n FROM beads WHERE status = 'in_progress' AND lease_expires_at < ?", (now,)
        )
        return int(row["n"]) if row else 0

    def merge_depth(self) -> list[sqlite3.Row]:
        return self.db.query(
            "SELECT rig, state, count(*) AS n, sum(gate_runs) AS gate_runs FROM merge_requests GROUP BY rig, state"
        )

    def dispatch_latencies(self, after_id: int, limit: int = 5000) -> list[tuple[int, float]]:
        """(claim event id, seconds from the bead becoming ready to that claim) for claims after `after_id`.

        Ready is the latest of: the bead's creation, its last release or reopening before the claim, and the
        last landing, completion or cancellation of each bead that blocked it. A rowid range scan of new events.
        """
        found = self.db.query(
            f"""SELECT c.id, c.at AS claimed, max(
                      b.created_at,
                      coalesce((SELECT max(e.at) FROM events e INDEXED BY events_bead WHERE e.bead_id = c.bead_id
                                AND e.id < c.id AND e.verb IN ('{Verb.bead_released.value}',
                                '{Verb.bead_reopened.value}')), ''),
                      coalesce((SELECT max(e.at) FROM deps d JOIN events e INDEXED BY events_bead
                                ON e.bead_id = d.depends_on AND e.id < c.id AND e.verb IN
                                ('{Verb.bead_merged.value}', '{Verb.bead_done.value}', '{Verb.bead_cancelled.value}')
                                WHERE d.bead_id = c.bead_id AND d.kind = 'blocks'), '')) AS ready
               FROM events c JOIN beads b ON b.id = c.bead_id
               WHERE c.id > ? AND c.verb = '{Verb.bead_claimed.value}' ORDER BY c.id LIMIT ?""",
            (after_id, limit),
        )
        return [(int(r["id"]), max(0.0, _seconds(r["ready"], r["claimed"]))) for r in found]

    def gate_times(self, after_id: int, limit: int = 5000) -> tuple[list[float], int]:
        """Seconds each merge request spent in testing (rebase, gates, verify, review, landing), for testing
        spells that began after event `after_id` and have ended; and the event id to resume from (the first
        spell still under way stops the scan, so it is counted once it ends)."""
        found = self.db.query(
            f"""SELECT t.id, t.at AS started,
                      (SELECT min(o.at) FROM events o INDEXED BY events_bead WHERE o.bead_id = t.bead_id
                       AND o.id > t.id AND o.verb IN ('{Verb.merge_merged.value}', '{Verb.merge_failed.value}',
                       '{Verb.merge_conflicted.value}', '{Verb.merge_rejected.value}', '{Verb.merge_queued.value}')
                      ) AS ended
               FROM events t WHERE t.id > ? AND t.verb = '{Verb.merge_testing.value}' ORDER BY t.id LIMIT ?""",
            (after_id, limit),
        )
        out: list[float] = []
        cursor = after_id
        for r in found:
            if r["ended"] is None:
                break
            out.append(max(0.0, _seconds(r["started"], r["ended"])))
            cursor = int(r["id"])
        return out, cursor

    def metric_state(self, name: str) -> tuple[int, str] | None:
        """The saved (cursor, state) of the `/metrics` histogram `name`, or None: none saved, or one that does not
        fit the events here (its cursor past the last event, or the event at it a different one, as after a
        restore from an older backup without the journal since). A cursor before the first event is fine: the
        events up to it were archived after they were counted."""
        row = self.db.query_one("SELECT cursor, cursor_at, state FROM _metrics WHERE name = ?", (name,))
        if row is None:
            return None
        cursor = int(row["cursor"])
        if cursor > 0:
            at = self.db.query_one("SELECT at FROM events WHERE id = ?", (cursor,))
            if at is not None:
                if at["at"] != row["cursor_at"]:
                    return None
            else:
                first = self.db.query_one("SELECT min(id) AS id FROM events")
                if first is None or first["id"] is None or cursor >= int(first["id"]):
                    return None
        return cursor, str(row["state"])

    def save_metric_state(self, name: str, expected: int | None, cursor: int, state: str) -> bool:
        """Save histogram `name` counted up to event `cursor`, if the saved one is still at `expected` (None: none
        saved, or one that did not fit); False when another process moved it first (its state is as good)."""
        with self.db.write(sync=False) as tx:
            at = tx.execute("SELECT at FROM events WHERE id = ?", (cursor,)).fetchone()
            values = (cursor, at[0] if at else None, state, tx.now, name)
            if expected is None:
                done = tx.execute(
                    "INSERT INTO _metrics (cursor, cursor_at, state, updated_at, name) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, cursor_at = excluded.cursor_at, "
                    "state = excluded.state, updated_at = excluded.updated_at",
                    values,
                )
            else:
                done = tx.execute(
                    "UPDATE _metrics SET cursor = ?, cursor_at = ?, state = ?, updated_at = ? "
                    "WHERE name = ? AND cursor = ?",
                    (*values, expected),
                )
            return done.rowcount == 1

    def change_stamp(self) -> tuple[int, ...]:
        """Changes whenever anything is written: every write transaction appends to the journal (its size only
        grows until it is rotated, which changes its inode) and commits into the WAL."""
        stamp: list[int] = []
        for path in (self.db.journal_path, self.db.wal_path):
            try:
                st = path.stat() if path is not None else None
            except FileNotFoundError:
                st = None
            stamp += [st.st_ino, st.st_size, st.st_mtime_ns] if st is not None else [0, 0, 0]
        return tuple(stamp)

    # -- traces ----------------------------------------------------------------------------------------
    def last_claim(self, agent: str) -> str | None:
        """The bead `agent` last claimed: the bead its model calls and tool calls count for."""
        row = self.db.query_one(
            "SELECT bead_id FROM events INDEXED BY events_claims WHERE verb = 'bead.claimed' AND actor = ? "
            "ORDER BY at DESC LIMIT 1",
            (agent,),
        )
        return str(row["bead_id"]) if row else None

    def run_spend(self, bead_id: str, agent: str) -> dict[str, Any]:
        """The run of `bead_id` by `agent`: when it was claimed, and the tokens and USD metered since."""
        claim = self.db.query_one(
            "SELECT max(at) AS at FROM events INDEXED BY events_bead WHERE bead_id = ? AND actor = ? AND verb IN "
            f"('{Verb.bead_claimed.value}', '{Verb.bead_taken_over.value}')",
            (bead_id, agent),
        )
        since = claim["at"] if claim and claim["at"] else None
        row = self.db.query_one(
            f"""SELECT count(*) AS requests, coalesce(sum(u.input_tokens), 0) AS input_tokens,
                      coalesce(sum(u.output_tokens), 0) AS output_tokens,
                      coalesce(sum(u.cache_creation_tokens), 0) AS cache_creation_tokens,
                      coalesce(sum(u.cache_read_tokens), 0) AS cache_read_tokens,
                      coalesce(sum({TOKENS}), 0) AS tokens, coalesce(sum(u.cost_usd), 0) AS cost_usd
               FROM usage u INDEXED BY usage_agent WHERE u.agent = ? AND u.at >= ? AND u.outcome != 'refused'""",
            (agent, since or ""),
        )
        return {"claimed_at": since, **(dict(row) if row else {})}

    def testing_since(self, bead_id: str) -> str | None:
        """When the bead's merge request last went into testing."""
        row = self.db.query_one(
            "SELECT max(at) AS at FROM events INDEXED BY events_bead WHERE bead_id = ? AND verb = ?",
            (bead_id, Verb.merge_testing.value),
        )
        return row["at"] if row and row["at"] else None

    # -- the operator's login --------------------------------------------------------------------------
    def issue_operator_token(self, actor: str) -> str:
        """A new operator token (shown once); every earlier one stops working."""
        token = OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as tx:
            tx.execute("UPDATE operator_tokens SET revoked_at = ? WHERE revoked_at IS NULL", (tx.now,))
            tx.execute(
                "INSERT INTO operator_tokens (token_hash, created_at, created_by) VALUES (?, ?, ?)",
                (secret_hash(token), tx.now, actor),
            )
            tx.event(actor, Verb.agent_token_rotated, agent="operator", after={"for": "dashboard"})
        return token

    def operator_token_valid(self, token: str) -> bool:
        row = self.db.query_one(
            "SELECT 1 FROM operator_tokens WHERE token_hash = ? AND revoked_at IS NULL", (secret_hash(token),)
        )
        return row is not None


def _seconds(first: str, last: str) -> float:
    """Seconds between two of the store's timestamps (ISO 8601, UTC, `Z`)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return (datetime.strptime(last, fmt) - datetime.strptime(first, fmt)).total_seconds()
