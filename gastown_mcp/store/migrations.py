"""Append-only schema migrations (sqlite-utils `Migrations`). Never edit one that has shipped: add another.

`migrations(name=...)` declares one as sqlite-utils' decorator does; sqlite-utils itself is loaded only when a
migration is pending, so opening a current database (every CLI command) costs one read of the applied names.

Numbering is fixed by owner so parallel work never collides: m001 core tables, m002 gateway (usage,
budgets, routes), m003 merges (merge requests). A new migration goes at the end of its file section.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database as UtilsDatabase

Step = Callable[["UtilsDatabase"], None]


class _Declared:
    """The migrations in order, declared like sqlite-utils' `Migrations(set_name)` and applied by it."""

    table = "_sqlite_migrations"  # sqlite-utils' record of what it applied

    def __init__(self, set_name: str) -> None:
        self.set_name = set_name
        self.steps: list[tuple[str, Step, bool]] = []

    def __call__(self, *, name: str | None = None, transactional: bool = True) -> Callable[[Step], Step]:
        def inner(fn: Step) -> Step:
            step = name or fn.__name__
            if any(step == known for known, _, _ in self.steps):
                raise ValueError(f"migration {step!r} is declared twice in {self.set_name!r}")
            self.steps.append((step, fn, transactional))
            return fn

        return inner

    def pending(self, conn: sqlite3.Connection) -> list[str]:
        try:
            rows = conn.execute(f"SELECT name FROM {self.table} WHERE migration_set = ?", (self.set_name,))
            applied = {r[0] for r in rows}
        except sqlite3.OperationalError:  # no table yet: a new database
            applied = set()
        return [step for step, _, _ in self.steps if step not in applied]

    def apply(self, conn: sqlite3.Connection) -> None:
        if not self.pending(conn):
            return
        from sqlite_utils import Database
        from sqlite_utils.migrations import Migrations

        run = Migrations(self.set_name)
        for step, fn, transactional in self.steps:
            run(name=step, transactional=transactional)(fn)
        run.apply(Database(conn))


migrations = _Declared("gastown")


def _run(db: UtilsDatabase, statements: str) -> None:
    # executescript() would COMMIT the migration's transaction, so run statements one by one.
    for stmt in statements.split(";\n"):
        if stmt.strip():
            db.execute(stmt)


@migrations(name="m001_core")
def m001_core(db: UtilsDatabase) -> None:
    _run(
        db,
        """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE beads (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    acceptance TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT 'task',
    priority INTEGER NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 4),
    status TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open','in_progress','blocked','done','cancelled')),
    assignee TEXT,
    lease_expires_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    open_blockers INTEGER NOT NULL DEFAULT 0,
    child_count INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    closed_at TEXT,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX beads_ready ON beads (priority, created_at, id)
    WHERE status = 'open' AND open_blockers = 0 AND assignee IS NULL;
CREATE INDEX beads_leases ON beads (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX beads_assignee ON beads (assignee) WHERE assignee IS NOT NULL;
CREATE INDEX beads_status ON beads (status, priority, created_at);
CREATE TABLE labels (
    bead_id TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    PRIMARY KEY (bead_id, label)
);
CREATE INDEX labels_label ON labels (label);
CREATE TABLE deps (
    bead_id TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('blocks','parent','related','discovered_from')),
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (bead_id, depends_on, kind)
);
CREATE INDEX deps_reverse ON deps (depends_on, kind);
CREATE TABLE comments (
    id INTEGER PRIMARY KEY,
    bead_id TEXT NOT NULL REFERENCES beads(id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_bead ON comments (bead_id, id);
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    rig TEXT,
    state TEXT NOT NULL DEFAULT 'requested',
    token_hash TEXT UNIQUE,
    gateway_key_hash TEXT UNIQUE,
    created_at TEXT NOT NULL,
    last_seen TEXT,
    removed_at TEXT,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('mail','nudge')),
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    thread TEXT,
    state TEXT NOT NULL DEFAULT 'sent' CHECK (state IN ('sent','delivered','acknowledged')),
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    acknowledged_at TEXT
);
CREATE INDEX messages_inbox ON messages (recipient, kind, state, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    verb TEXT NOT NULL,
    bead_id TEXT,
    agent TEXT,
    before TEXT,
    after TEXT
);
CREATE INDEX events_bead ON events (bead_id, id) WHERE bead_id IS NOT NULL;
CREATE INDEX events_agent ON events (agent, id) WHERE agent IS NOT NULL
""",
    )


@migrations(name="m002_gateway")
def m002_gateway(db: UtilsDatabase) -> None:
    # One row per metered request; budgets keep running totals so admission is one indexed read.
    _run(
        db,
        """
CREATE TABLE usage (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    agent TEXT NOT NULL,
    rig TEXT,
    model TEXT NOT NULL,
    upstream TEXT NOT NULL DEFAULT '',
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    duration_ms REAL NOT NULL DEFAULT 0,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok','error','abandoned','refused')),
    stream INTEGER NOT NULL DEFAULT 0,
    request_id TEXT
);
CREATE INDEX usage_agent ON usage (agent, id);
CREATE INDEX usage_rig ON usage (rig, id) WHERE rig IS NOT NULL;
CREATE TABLE budgets (
    scope TEXT NOT NULL CHECK (scope IN ('agent','rig','town')),
    name TEXT NOT NULL,
    token_limit INTEGER CHECK (token_limit IS NULL OR token_limit >= 0),
    usd_limit REAL CHECK (usd_limit IS NULL OR usd_limit >= 0),
    tokens_spent INTEGER NOT NULL DEFAULT 0,
    usd_spent REAL NOT NULL DEFAULT 0,
    exhausted_at TEXT,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE reservations (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    rig TEXT,
    model TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    usd REAL NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX reservations_agent ON reservations (agent);
CREATE INDEX reservations_rig ON reservations (rig) WHERE rig IS NOT NULL;
CREATE TABLE routes (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL DEFAULT '*',
    model TEXT NOT NULL DEFAULT '*',
    upstream TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (agent, model)
)
""",
    )


@migrations(name="m003_merges")
def m003_merges(db: UtilsDatabase) -> None:
    # A bead handed in is done but its dependents wait until its commit is on main: merge_pending keeps it
    # counted as an open blocker. One merge request per hand-in; `landing` is the commit a land is moving
    # main to, written before the compare-and-swap so a crash in between can be told apart on restart.
    _run(
        db,
        """
ALTER TABLE beads ADD COLUMN merge_pending INTEGER NOT NULL DEFAULT 0;
CREATE TABLE merge_requests (
    id INTEGER PRIMARY KEY,
    rig TEXT NOT NULL,
    bead_id TEXT NOT NULL REFERENCES beads(id),
    agent TEXT NOT NULL,
    ref TEXT NOT NULL,
    tip TEXT NOT NULL,
    base TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued','testing','merged','conflicted','failed','rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    landing TEXT,
    landed TEXT,
    detail TEXT NOT NULL DEFAULT '',
    log_tail TEXT NOT NULL DEFAULT '',
    gate_runs INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    merged_at TEXT
);
CREATE INDEX merge_requests_queue ON merge_requests (rig, state, id);
CREATE INDEX merge_requests_bead ON merge_requests (bead_id)
""",
    )


@migrations(name="m004_reservation_owner")
def m004_reservation_owner(db: UtilsDatabase) -> None:
    # Which gateway instance made a reservation: at start-up the gateway releases every reservation no live
    # instance owns, so a crash mid-request cannot hold a budget (NULL = made before owners were recorded).
    _run(db, "ALTER TABLE reservations ADD COLUMN owner TEXT")


# m005 and later go here.


@migrations(name="m006_durability")
def m006_durability(db: UtilsDatabase) -> None:
    # _changes: rows touched by the open write transaction (filled by capture triggers, drained into the journal
    # before COMMIT); _journal: the sequence number of the last journaled transaction, committed with it.
    _run(
        db,
        """
CREATE TABLE _changes (tbl TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tbl, rid)) WITHOUT ROWID;
CREATE TABLE _journal (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
INSERT INTO _journal (id, seq) VALUES (1, 0);
CREATE INDEX usage_status ON usage (status, at)
""",
    )


@migrations(name="m007_overseer")
def m007_overseer(db: UtilsDatabase) -> None:
    # Goals the operator states and the directives the overseer gives the mayor for them. A directive's
    # dedup_key is unique among open ones (issued or acknowledged), so the same directive is never given twice
    # at once; attempts and next_at carry the back-off of one that keeps failing.
    _run(
        db,
        """
CREATE TABLE goals (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    rig TEXT,
    budget_usd REAL CHECK (budget_usd IS NULL OR budget_usd >= 0),
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active','achieved','abandoned')),
    reason TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    closed_at TEXT
);
CREATE TABLE goal_convoys (
    id INTEGER PRIMARY KEY,
    goal_id INTEGER NOT NULL REFERENCES goals(id) ON DELETE CASCADE,
    convoy_id TEXT NOT NULL REFERENCES beads(id),
    created_at TEXT NOT NULL,
    UNIQUE (goal_id, convoy_id)
);
CREATE INDEX goal_convoys_convoy ON goal_convoys (convoy_id);
CREATE TABLE directives (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN
        ('plan_goal','reprioritise','unblock','cancel','set_max_polecats','pause_rig','resume_rig','escalate')),
    args TEXT NOT NULL DEFAULT '{}',
    goal_id INTEGER REFERENCES goals(id),
    dedup_key TEXT NOT NULL,
    recipient TEXT NOT NULL,
    message_id INTEGER,
    state TEXT NOT NULL DEFAULT 'issued' CHECK (state IN ('issued','acknowledged','done','refused')),
    reason TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 1,
    next_at TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    acknowledged_at TEXT,
    closed_at TEXT
);
CREATE UNIQUE INDEX directives_open ON directives (dedup_key) WHERE state IN ('issued','acknowledged');
CREATE INDEX directives_key ON directives (dedup_key, id);
CREATE INDEX directives_state ON directives (state, id)
""",
    )


@migrations(name="m008_growth")
def m008_growth(db: UtilsDatabase) -> None:
    # Nothing grows without bound. _counts: bead and merge-request counts kept by triggers, so the town's
    # status is a handful of key reads at any size (derived, not journaled: replay recounts them), plus
    # `agents_epoch`, bumped by every change to an agent's identity, which token -> agent caches compare.
    # agents_archive: exited agents moved out of the hot table after a retention (names stay taken).
    # usage_daily: usage rows past their retention rolled into one row per agent, rig, model and day.
    from gastown_mcp.store.counts import recount

    _run(
        db,
        """
CREATE TABLE _counts (key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE agents_archive (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    rig TEXT,
    state TEXT NOT NULL,
    token_hash TEXT,
    gateway_key_hash TEXT,
    created_at TEXT NOT NULL,
    last_seen TEXT,
    removed_at TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    archived_at TEXT NOT NULL
);
CREATE TABLE usage_daily (
    day TEXT NOT NULL,
    agent TEXT NOT NULL,
    rig TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    duration_ms REAL NOT NULL DEFAULT 0,
    last_at TEXT NOT NULL,
    PRIMARY KEY (day, agent, rig, model)
);
CREATE INDEX usage_daily_agent ON usage_daily (agent);
CREATE INDEX usage_daily_rig ON usage_daily (rig);
CREATE INDEX messages_pending ON messages (recipient) WHERE kind = 'nudge' AND state = 'sent';
CREATE INDEX agents_state ON agents (state);
CREATE INDEX events_at ON events (at)
""",
    )
    ready = "({0}.status = 'open' AND {0}.open_blockers = 0 AND {0}.assignee IS NULL)"
    bead_sums = (
        "UPDATE _counts SET n = n {1} 1 WHERE key = 'beads:' || {0}.status; "
        "UPDATE _counts SET n = n {1} {0}.merge_pending WHERE key = 'beads:merge_pending'; "
        f"UPDATE _counts SET n = n {{1}} {ready} WHERE key = 'beads:ready';"
    )
    merge_sums = "UPDATE _counts SET n = n {1} 1 WHERE key = 'merges:' || {0}.state;"
    epoch = "UPDATE _counts SET n = n + 1 WHERE key = 'agents_epoch';"
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in ("status", "merge_pending", "open_blockers", "assignee"))
    for stmt in (
        f"CREATE TRIGGER _cnt_beads_i AFTER INSERT ON beads BEGIN {bead_sums.format('NEW', '+')} END",
        f"CREATE TRIGGER _cnt_beads_d AFTER DELETE ON beads BEGIN {bead_sums.format('OLD', '-')} END",
        "CREATE TRIGGER _cnt_beads_u AFTER UPDATE OF status, merge_pending, open_blockers, assignee ON beads "
        f"WHEN {changed} BEGIN {bead_sums.format('OLD', '-')} {bead_sums.format('NEW', '+')} END",
        f"CREATE TRIGGER _cnt_merges_i AFTER INSERT ON merge_requests BEGIN {merge_sums.format('NEW', '+')} END",
        f"CREATE TRIGGER _cnt_merges_d AFTER DELETE ON merge_requests BEGIN {merge_sums.format('OLD', '-')} END",
        "CREATE TRIGGER _cnt_merges_u AFTER UPDATE OF state ON merge_requests WHEN OLD.state IS NOT NEW.state "
        f"BEGIN {merge_sums.format('OLD', '-')} {merge_sums.format('NEW', '+')} END",
        f"CREATE TRIGGER _cnt_agents_i AFTER INSERT ON agents BEGIN {epoch} END",
        f"CREATE TRIGGER _cnt_agents_d AFTER DELETE ON agents BEGIN {epoch} END",
        "CREATE TRIGGER _cnt_agents_u AFTER UPDATE OF name, role, rig, state, token_hash, gateway_key_hash, metadata, "
        f"removed_at ON agents BEGIN {epoch} END",
    ):
        db.execute(stmt)
    recount(db.conn)


@migrations(name="m009_dashboard")
def m009_dashboard(db: UtilsDatabase) -> None:
    # The operator's dashboard login (hashes only; one live token, rotated by `gastown dashboard token`) and the
    # indexes its board, spend and metrics read at 100k beads: work awaiting merge and merged work by recency,
    # each agent's claims by time (to attribute model spend to the bead it held), and usage by time.
    _run(
        db,
        """
CREATE TABLE operator_tokens (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX beads_awaiting_merge ON beads (priority, created_at, id) WHERE status = 'done' AND merge_pending = 1;
CREATE INDEX beads_merged ON beads (closed_at) WHERE status = 'done' AND merge_pending = 0;
CREATE INDEX events_claims ON events (actor, at) WHERE verb = 'bead.claimed';
CREATE INDEX usage_at ON usage (at)
""",
    )


@migrations(name="m010_upstreams")
def m010_upstreams(db: UtilsDatabase) -> None:
    # Why a model call failed (the upstream's error message, or the gateway's own: no key, unreachable), so the
    # last error of an agent whose calls fail shows in `agent ls`/`status` and the witness can tell the mayor.
    # The partial index keeps the witness's look at failing agents (every tick) off the successful rows.
    _run(
        db,
        "ALTER TABLE usage ADD COLUMN error TEXT;\n"
        "CREATE INDEX usage_errors ON usage (agent, id) WHERE outcome = 'error'",
    )


@migrations(name="m011_metrics")
def m011_metrics(db: UtilsDatabase) -> None:
    # The histograms `/metrics` counts from events (dispatch latency, gate time), each with the event it counted
    # up to, so a scrape (the first one of a new process too) reads only the events after it. Derived data: a
    # `_` table, outside the journal; a restored database brings the state its own events had.
    _run(
        db,
        "CREATE TABLE _metrics (name TEXT PRIMARY KEY, cursor INTEGER NOT NULL, cursor_at TEXT, "
        "state TEXT NOT NULL, updated_at TEXT NOT NULL)",
    )


@migrations(name="m012_temp_capture")
def m012_temp_capture(db: UtilsDatabase) -> None:
    # The journal's capture moved into each connection's temp schema (`journal.capture_sql`): the triggers that
    # noted touched rows in `_changes` wrote a page of the database file with every write. Nothing is pending in
    # `_changes` outside a write transaction (each drains it before COMMIT), so it goes with its triggers.
    found = db.execute("SELECT name FROM sqlite_master WHERE type='trigger' AND name LIKE '\\_cap\\_%' ESCAPE '\\'")
    names = [r[0] for r in found]
    for name in names:
        db.execute(f'DROP TRIGGER "{name}"')
    db.execute("DROP TABLE IF EXISTS _changes")


@migrations(name="m013_events_at")
def m013_events_at(db: UtilsDatabase) -> None:
    # Every event written also wrote a page of this index; only the daily rotation of old events read it, and it
    # now reads the oldest events by id instead (`Growth.rotate_events`).
    db.execute("DROP INDEX IF EXISTS events_at")


@migrations(name="m014_reservation_indexes")
def m014_reservation_indexes(db: UtilsDatabase) -> None:
    # Reservations live only while their request is in flight (a few rows; the admission read scans them anyway,
    # its join cannot use an index): each of these cost every model request four pages of the database file.
    db.execute("DROP INDEX IF EXISTS reservations_agent")
    db.execute("DROP INDEX IF EXISTS reservations_rig")


def apply_migrations(conn: sqlite3.Connection) -> None:
    migrations.apply(conn)
