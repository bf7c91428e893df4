"""The reads behind `bead ready` and `town status` (and the agent lookup and lease renewal of a call made as an
agent), with the standard library alone: the full store (`BeadRepo.ready`, `AgentRepo.find` and `touch`,
`Town.status`) and the CLI's quick path (`town/glance.py`) share them."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from gastown_mcp.clock import now_iso
from gastown_mcp.store import counts as maintained
from gastown_mcp.store.db import Database

SUMMARY_COLS = "id, title, status, priority, assignee"
# `models.ALIVE_STATES` by value (a test keeps the two equal): the models load pydantic, this module must not.
ALIVE = frozenset({"starting", "running", "idle", "nudged", "stalled"})


def ready_rows(
    db: Database, *, limit: int, now: str, label: str | None = None, unlabelled: str | None = None
) -> list[sqlite3.Row]:
    """Open, unblocked, unclaimed beads — plus in-progress ones whose lease ran out — by priority, then age
    (rows of `SUMMARY_COLS`). `label` keeps only beads with that label; `unlabelled` (a prefix such as "rig:")
    only beads with no label starting with it, and then no lapsed ones (dispatch takes only never-claimed work).
    """
    where, params = "", list[Any]()
    if label is not None:
        where += " AND id IN (SELECT bead_id FROM labels WHERE label=?)"
        params.append(label)
    if unlabelled is not None:
        where += " AND id NOT IN (SELECT bead_id FROM labels WHERE substr(label, 1, ?)=?)"
        params += [len(unlabelled), unlabelled]
    fresh = db.query(
        f"""SELECT {SUMMARY_COLS}, created_at FROM beads INDEXED BY beads_ready
            WHERE status='open' AND open_blockers=0 AND assignee IS NULL{where}
            ORDER BY priority, created_at, id LIMIT ?""",
        (*params, limit),
    )
    if where:
        return fresh
    stale = db.query(
        f"""SELECT {SUMMARY_COLS}, created_at FROM beads INDEXED BY beads_leases
            WHERE status='in_progress' AND lease_expires_at < ?
            ORDER BY priority, created_at, id LIMIT ?""",
        (now, limit),
    )
    merged = sorted([*fresh, *stale], key=lambda r: (r["priority"], r["created_at"], r["id"]))
    return merged[:limit]


def agent_row(db: Database, name: str) -> sqlite3.Row | None:
    """An agent's row by name: the hot table first, then the archive of agents that exited long ago."""
    return db.query_one("SELECT * FROM agents WHERE name=?", (name,)) or db.query_one(
        "SELECT * FROM agents_archive WHERE name=?", (name,)
    )


def touch(db: Database, name: str, lease_seconds: float) -> None:
    """The agent is alive: record when, and renew the leases on every bead it holds (not audited)."""
    with db.write() as tx:
        tx.execute("UPDATE agents SET last_seen=? WHERE name=?", (tx.now, name))
        tx.execute(
            "UPDATE beads SET lease_expires_at=? WHERE assignee=? AND status='in_progress'",
            (now_iso(tx.at + lease_seconds), name),
        )


def status_counts(db: Database) -> dict[str, Any]:
    """The town status's counts (every `TownStatus` field but the town's name and prefix), in field order."""
    by_role: dict[str, int] = {}
    active = 0
    for row in db.query("SELECT role, state FROM agents WHERE state != 'removed' ORDER BY created_at, name"):
        by_role[row["role"]] = by_role.get(row["role"], 0) + 1
        active += row["state"] in ALIVE
    nudges = db.query("SELECT count(*) AS n FROM messages WHERE kind='nudge' AND state='sent'")[0]["n"]
    estop = db.query("SELECT value FROM meta WHERE key='estop'")
    conn = db.conn
    return {
        "beads_by_status": {k: n for k, n in maintained.under(conn, "beads:").items() if k in maintained.BEAD_STATUSES},
        "ready": maintained.one(conn, "beads:ready"),
        "agents_by_role": by_role,
        "agents_active": active,
        "pending_nudges": int(nudges),
        "awaiting_merge": maintained.one(conn, "beads:merge_pending"),
        "merges_by_state": maintained.under(conn, "merges:"),
        "estop": json.loads(estop[0]["value"]) if estop else None,
    }
