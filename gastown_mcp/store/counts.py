"""Counts the store maintains instead of scanning: beads by status, ready and awaiting merge, merge requests by
state, and an epoch bumped by every change to an agent's identity (what token -> agent caches compare).

Triggers (migration m008) keep `_counts` current inside every write. The table is derived, not journaled:
replaying the journal's upserts does not run the delete side of those triggers, so replay ends with
`recount`.
"""

from __future__ import annotations

import sqlite3

BEAD_STATUSES = ("open", "in_progress", "blocked", "done", "cancelled")
MERGE_STATES = ("queued", "testing", "merged", "conflicted", "failed", "rejected")
EPOCH = "agents_epoch"


def recount(conn: sqlite3.Connection) -> None:
    """Set every maintained count from the tables themselves (inside the caller's transaction, if any)."""
    found: dict[str, int] = {f"beads:{s}": 0 for s in BEAD_STATUSES}
    found.update({f"merges:{s}": 0 for s in MERGE_STATES})
    for status, n in conn.execute("SELECT status, count(*) FROM beads GROUP BY status"):
        found[f"beads:{status}"] = n
    found["beads:merge_pending"] = conn.execute("SELECT count(*) FROM beads WHERE merge_pending = 1").fetchone()[0]
    found["beads:ready"] = conn.execute(
        "SELECT count(*) FROM beads WHERE status = 'open' AND open_blockers = 0 AND assignee IS NULL"
    ).fetchone()[0]
    for state, n in conn.execute("SELECT state, count(*) FROM merge_requests GROUP BY state"):
        found[f"merges:{state}"] = n
    conn.executemany(
        "INSERT INTO _counts (key, n) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET n = excluded.n",
        list(found.items()),
    )
    conn.execute(f"INSERT INTO _counts (key, n) VALUES ('{EPOCH}', 1) ON CONFLICT (key) DO UPDATE SET n = n + 1")


def under(conn: sqlite3.Connection, prefix: str) -> dict[str, int]:
    """The non-zero counts whose key starts with `prefix` ("beads:", "merges:"), keyed by the rest."""
    found = conn.execute("SELECT key, n FROM _counts WHERE key > ? AND key < ?", (prefix, prefix + "\uffff"))
    return {key[len(prefix) :]: int(n) for key, n in found if n}


def one(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT n FROM _counts WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0
