"""The SQLite connection: WAL, busy timeout, one `BEGIN IMMEDIATE` per write, migrations on open.

`Database` hands each thread its own connection (SQLite connections are not shared across threads).
`write()` is the only way to change data: it opens an immediate transaction, runs the body, appends the
events the body recorded to the JSONL journal after commit, and turns sqlite errors into `StoreError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gastown_mcp.errors import StoreError
from gastown_mcp.models import now_iso

BUSY_TIMEOUT_MS = 10_000


@dataclass
class Tx:
    """One open write transaction: the connection plus the events it recorded."""

    conn: sqlite3.Connection
    at: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def now(self) -> str:
        return now_iso(self.at)

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def event(
        self,
        actor: str,
        verb: str,
        *,
        bead_id: str | None = None,
        agent: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Record a state change in the audit trail, inside this transaction."""
        b = json.dumps(before, sort_keys=True) if before is not None else None
        a = json.dumps(after, sort_keys=True) if after is not None else None
        cur = self.conn.execute(
            "INSERT INTO events (at, actor, verb, bead_id, agent, before, after) VALUES (?,?,?,?,?,?,?)",
            (self.now, actor, verb, bead_id, agent, b, a),
        )
        self.events.append(
            {
                "id": cur.lastrowid,
                "at": self.now,
                "actor": actor,
                "verb": verb,
                "bead_id": bead_id,
                "agent": agent,
                "before": before,
                "after": after,
            }
        )


class Database:
    """A town's SQLite file. Safe to use from many threads and many processes at once."""

    def __init__(self, path: Path, journal_path: Path | None = None) -> None:
        self.path = Path(path)
        self.journal_path = journal_path
        self._local = threading.local()
        self._journal_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        if not self.path.parent.exists():
            raise StoreError(f"town directory {self.path.parent} does not exist; run `gastown init` first")
        self._migrate()

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the town database {self.path}: {exc}; check the file or restore it "
                "from the events journal"
            ) from exc
        with self._all_lock:
            self._all.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        from gastown_mcp.store.migrations import apply_migrations

        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                apply_migrations(self.conn)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot migrate the town database {self.path}: {exc}") from exc
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- reading and writing -----------------------------------------------------------------------
    def query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"database read failed: {exc}; retry, and if it keeps failing stop the town and check the file with "
                f"`sqlite3 {self.path} 'PRAGMA integrity_check'`"
            ) from exc

    def query_one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """One `BEGIN IMMEDIATE` transaction; commits on success, rolls back on any exception."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"the town database is busy ({exc}); another writer held it for over "
                f"{BUSY_TIMEOUT_MS // 1000}s, retry shortly"
            ) from exc
        tx = Tx(conn)
        try:
            yield tx
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreError(f"database write failed: {exc}; nothing was changed, retry") from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreError(f"database write failed: {exc}; nothing was changed, retry") from exc
        if tx.events:
            self._journal(tx.events)

    def _journal(self, events: list[dict[str, Any]]) -> None:
        if self.journal_path is None:
            return
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in events)
        with self._journal_lock, open(self.journal_path, "a") as fh:
            fh.write(lines)
