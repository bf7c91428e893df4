"""The SQLite connection: WAL, busy timeout, one `BEGIN IMMEDIATE` per write, migrations on open, the journal.

`Database` hands each thread its own connection (SQLite connections are not shared across threads).
`write()` is the only way to change data. Order (the journal is written ahead): run the body; take the
after-images of every row it touched (`journal.drain`); bump the sequence number in the same transaction;
append the journal line, still under the write lock (so lines land in sequence order across processes);
COMMIT; fdatasync the journal (group commit); only then return. A journal write that fails rolls the
transaction back, so no caller ever sees an error for a write that committed.
Recovery rule, on every open: journal lines with a sequence number above the database's are rolled forward
(they were written before a COMMIT the database lost, or never made); a database ahead of its journal (only
unacknowledged writes can be) is reported by the journal dog, which takes a backup that covers the gap.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gastown_mcp.clock import now_iso
from gastown_mcp.errors import StoreError
from gastown_mcp.store import journal as jr
from gastown_mcp.store.counts import recount

BUSY_TIMEOUT_MS = 10_000
# The WAL restarts from its start only at a write that begins after a checkpoint caught up with every frame.
# Writers that never pause outrun a PASSIVE checkpoint, and the WAL then grows with every write; past this many
# frames (16 MiB of 4 KiB pages) `checkpoint` runs a RESTART one, which holds writers off while it finishes.
WAL_RESTART_FRAMES = 4096
WAL_RESTART_WAIT_MS = 100  # its wait for a writer of another process, then for readers (writers held off meanwhile)
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # a restarted WAL's file is cut back to this (`journal_size_limit`)


class WriteLockTaken(Exception):
    """`write(wait=False)` found the write lock held (by a writer of this process or another): nothing changed."""


SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass
class Deferred:
    """What the writes of a `Database.deferred()` block leave to their caller: the journal is to be synced up to
    `end` (0: nothing to sync) before anyone hears of them. `wrote`: a write of the block has committed."""

    end: int = 0
    wrote: bool = False


@dataclass(frozen=True)
class WalCheckpoint:
    """What `Database.checkpoint` found and did: the WAL's frames after its PASSIVE checkpoint, and whether the
    RESTART checkpoint that followed let the WAL start over (None: none was needed or allowed; False: a reader
    held its snapshot, or another process's writer its lock, through the wait)."""

    frames: int
    restarted: bool | None


def restore_hint(path: Path) -> str:
    """The exact command that rebuilds this town's database (newest verified backup + journal replay)."""
    return f"`gastown restore --town {path.parent}`"


@dataclass
class Tx:
    """One open write transaction: the connection plus the events it recorded."""

    conn: sqlite3.Connection
    at: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)

    @functools.cached_property
    def now(self) -> str:
        """`at` as the store's timestamp text (formatted once: a transaction stamps several rows with it)."""
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

    def __init__(
        self,
        path: Path,
        journal_path: Path | None = None,
        *,
        fsync: bool = True,
        must_exist: bool = False,
        check: bool = False,
    ) -> None:
        """`must_exist`: an existing town's database; refuse (with the restore command) a missing or empty
        file instead of starting an empty town. `check`: run SQLite's quick check before serving."""
        self.path = Path(path)
        self.journal_path = journal_path
        self.journal = jr.Journal(journal_path, fsync=fsync) if journal_path is not None else None
        self.journal_error: str | None = None  # a journal sync that failed after COMMIT (the dog reports it)
        self.rolled_forward = 0  # journal records applied at open (recovery)
        self._local = threading.local()
        # Every open connection and the thread it serves: a thread that ended hands its connection to the
        # next new thread, so connections stay as many as the threads alive at once (anyio retires idle
        # worker threads and starts new ones; each used to leave a connection and its file descriptors open).
        self._all: dict[sqlite3.Connection, threading.Thread] = {}
        self._all_lock = threading.Lock()
        self._nowait: set[sqlite3.Connection] = set()  # the connections made for `write(wait=False)`
        self._writer = threading.RLock()  # this process's writers queue here (see `write`)
        self._restart_floor = 0  # after a RESTART held off: no other before the WAL doubles (`checkpoint`)
        self._deferred: ContextVar[Deferred | None] = ContextVar("gastown_deferred", default=None)
        self._unsynced = 0  # journal offset up to which `write(sync=False)` left lines for `sync()`
        # The journal's capture, per connection (temp triggers, see `journal.capture_sql`): the statements for the
        # schema version they were made for, and the schema version each connection was armed with.
        self._capture: tuple[int, list[str]] | None = None
        self._armed: dict[sqlite3.Connection, int] = {}
        if not self.path.parent.exists():
            raise StoreError(f"town directory {self.path.parent} does not exist; run `gastown init` first")
        if must_exist:
            self._refuse_if_lost()
        self._migrate()
        if check:
            problems = self.quick_check()
            if problems:
                self.close()
                raise StoreError(
                    f"the town database {self.path} fails its integrity check ({problems[0]}); nothing was "
                    f"served. Stop the town and run {restore_hint(self.path)}"
                )

    def _refuse_if_lost(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise StoreError(
                f"the town database {self.path} is missing; refusing to start an empty town. "
                f"Run {restore_hint(self.path)}"
            ) from None
        if size == 0:
            raise StoreError(
                f"the town database {self.path} is empty; refusing to start an empty town. "
                f"Run {restore_hint(self.path)}"
            )
        with open(self.path, "rb") as fh:
            if fh.read(16) != SQLITE_HEADER:
                raise StoreError(
                    f"the town database {self.path} is not a SQLite database (damaged header); "
                    f"run {restore_hint(self.path)}"
                )

    def quick_check(self, *, full: bool = False) -> list[str]:
        """SQLite's quick (or full) integrity check: [] when the file is sound, else what it found."""
        try:
            rows = self.conn.execute("PRAGMA integrity_check(20)" if full else "PRAGMA quick_check(20)").fetchall()
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        found = [str(r[0]) for r in rows]
        return [] if found == ["ok"] else found

    # -- connections -------------------------------------------------------------------------------
    def _connect(self, *, nowait: bool = False) -> sqlite3.Connection:
        """A connection for this thread: one a finished thread left (of the same kind), else a new one. A
        `nowait` one (for `write(wait=False)`) has a busy timeout of 0: a held write lock fails at once."""
        me = threading.current_thread()
        with self._all_lock:
            for conn, owner in self._all.items():
                if not owner.is_alive() and (conn in self._nowait) == nowait:
                    self._all[conn] = me
                    if conn.in_transaction:  # cannot happen through write(); never inherit an open one
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    return conn
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={0 if nowait else BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA temp_store=MEMORY")  # the capture's temp table: never a file
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the town database {self.path}: {exc}; stop the town and run {restore_hint(self.path)}"
            ) from exc
        with self._all_lock:
            self._all[conn] = me
            if nowait:
                self._nowait.add(conn)
        return conn

    def connections(self) -> int:
        """How many connections are open (one per thread that is alive and has used the database)."""
        with self._all_lock:
            return len(self._all)

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _nowait_conn(self) -> sqlite3.Connection:
        """This thread's connection for `write(wait=False)` (made on first use: only an event loop's thread has
        one), so no write pays for switching a busy timeout off and on again."""
        conn: sqlite3.Connection | None = getattr(self._local, "nowait", None)
        if conn is None:
            conn = self._connect(nowait=True)
            ckpt = getattr(self._local, "autocheckpoint", True)
            conn.execute(f"PRAGMA wal_autocheckpoint={1000 if ckpt else 0}")
            self._local.nowait = conn
        return conn

    def nowait_version(self) -> tuple[int, int]:
        """Changes whenever a read on this thread could see something new: another connection committed
        (`PRAGMA data_version` of this thread's no-wait connection) or that connection changed rows itself."""
        conn = self._nowait_conn()
        try:
            return int(conn.execute("PRAGMA data_version").fetchone()[0]), conn.total_changes
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the town database's version: {exc}") from exc

    def nowait_changes(self) -> int:
        """Rows this thread's no-wait connection has changed so far (`nowait_version`'s second part)."""
        return self._nowait_conn().total_changes

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
            self._nowait.clear()
            self._armed.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        from gastown_mcp.store.migrations import apply_migrations

        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                apply_migrations(self.conn)
                self._roll_forward()
            except sqlite3.DatabaseError as exc:
                self.close()
                raise StoreError(
                    f"cannot open the town database {self.path}: {exc}; stop the town and run {restore_hint(self.path)}"
                ) from exc
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def seq(self) -> int:
        """The sequence number of the last journaled transaction this database holds."""
        row = self.conn.execute(f"SELECT seq FROM {jr.SEQ}").fetchone()
        return int(row[0]) if row else 0

    def _roll_forward(self) -> None:
        """The recovery rule: apply journal records the database does not have yet, in order, gap-free."""
        if self.journal_path is None:
            return
        have = self.seq()
        if jr.tail_seq(self.journal_path) <= have:
            return
        self.rolled_forward = replay(self.path, self.journal_path, have)

    def journal_state(self) -> dict[str, Any]:
        """What the journal dog compares: the database's sequence number and the journal's first and last."""
        path = self.journal_path
        return {
            "db_seq": self.seq(),
            "journal": str(path) if path else None,
            "present": bool(path and path.exists()),
            "head_seq": jr.head_seq(path) if path else 0,
            "tail_seq": jr.tail_seq(path) if path else 0,
            "replaced": bool(self.journal and self.journal.replaced),
            "error": self.journal_error,
        }

    def journal_bytes(self) -> int:
        """The journal file's size (0 when there is none)."""
        try:
            return self.journal_path.stat().st_size if self.journal_path is not None else 0
        except FileNotFoundError:
            return 0

    def trim_journal(self, upto: int, *, min_fraction: float = 0.5, min_bytes: int = 0) -> int:
        """Drop the journal's records with seq <= `upto` once they are at least `min_fraction` of the file and
        `min_bytes` (so the part kept is copied about once per byte written); returns the bytes dropped."""
        if self.journal is None or self.journal_path is None or not self.journal_path.exists():
            return 0
        size = self.journal_path.stat().st_size
        drop = jr.offset_after(self.journal_path, upto)
        if size == 0 or drop < size * min_fraction or drop < max(1, min_bytes):
            return 0
        return self.journal.trim(upto, self.seq(), self._write_lock)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """SQLite's write lock with nothing written: every journal append happens under it."""
        with self._writer:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")

    def autocheckpoint(self, on: bool) -> None:
        """Whether this thread's `write(wait=False)` commits copy the WAL into the database file themselves when
        one takes the WAL past 1000 pages (SQLite's default, on). An event loop that must not stall on that turns
        it off and leaves it to `checkpoint()` in another thread; every other connection keeps its own."""
        self._local.autocheckpoint = on
        conn: sqlite3.Connection | None = getattr(self._local, "nowait", None)
        if conn is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={1000 if on else 0}")

    def checkpoint(self, *, restart: bool = True) -> WalCheckpoint:
        """Copy the WAL's committed pages into the database file as far as readers allow, waiting for no one
        (a PASSIVE checkpoint; cheap when there is nothing new). When writers kept that from ever catching up
        (the WAL is past `WAL_RESTART_FRAMES`) and `restart`, a RESTART checkpoint follows: it holds this
        process's writers (queued on its lock) and other processes' (SQLite's) off while it copies what the
        PASSIVE one could not, waits up to `WAL_RESTART_WAIT_MS` for readers, and so lets the next write start
        the WAL over. One held off by a long reader (a backup's copy) is not tried again before the WAL has
        doubled, so such a reader costs the writers a few such waits, not one every call."""
        conn = self.conn
        try:
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames < WAL_RESTART_FRAMES or frames < self._restart_floor // 2:
                self._restart_floor = 0  # the WAL started over since one was held off
            if not restart or frames < max(WAL_RESTART_FRAMES, self._restart_floor):
                return WalCheckpoint(int(frames), None)
            with self._writer:
                conn.execute(f"PRAGMA busy_timeout={WAL_RESTART_WAIT_MS}")
                try:
                    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._restart_floor = 2 * frames if busy else 0
            return WalCheckpoint(int(frames), not busy)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"WAL checkpoint failed: {exc}; it is retried on the next one") from exc

    @property
    def wal_path(self) -> Path:
        """SQLite's write-ahead log beside the database file."""
        return self.path.with_name(self.path.name + "-wal")

    def wal_bytes(self) -> int:
        """The WAL file's size: its high-water mark since it was last cut back, not what it holds now."""
        try:
            return self.wal_path.stat().st_size
        except FileNotFoundError:
            return 0

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
    def deferred(self) -> Iterator[Deferred]:
        """A block of reads and writes run by an event loop, which must not block: its first write does not
        queue for the write lock (`WriteLockTaken`, nothing changed, when another writer holds it; later writes
        of the block do queue, so a block is never left half done), and no write of it syncs the journal. The
        caller makes the block durable (`durable(d.end)`) before it reports any of it."""
        block = Deferred()
        reset = self._deferred.set(block)
        try:
            yield block
        finally:
            self._deferred.reset(reset)

    def deferring(self) -> bool:
        """Whether this code runs in a `deferred()` block (it must not do slow work: git, containers)."""
        return self._deferred.get() is not None

    def durable(self, end: int) -> None:
        """Return once the journal is on disk up to `end` (a `deferred()` block's writes); group commit."""
        if end and self.journal is not None:
            self._sync(end)

    @contextlib.contextmanager
    def write(self, *, sync: bool = True, wait: bool = True) -> Iterator[Tx]:
        """One `BEGIN IMMEDIATE` transaction; commits on success, rolls back on any exception.

        Writers of this process queue on a lock before asking SQLite for its write lock: SQLite's own busy
        handler sleeps (1, 2, 5 ... 100 ms) between tries, so 32 threads contending for it spent most of their
        time asleep; queued here, the next writer starts the moment the last one commits. The journal sync
        happens after the lock is released, so one fdatasync can serve several writers (group commit).

        For an event loop that must not block: `wait=False` raises `WriteLockTaken` at once (nothing changed)
        when the lock is held; `sync=False` returns once committed (durable against a crash of this process)
        and leaves the journal's fdatasync to the next `sync()` or synced write (durable against power loss).
        In a `deferred()` block, the block decides both."""
        span: tuple[int, int] | None = None
        block = self._deferred.get()
        if block is not None:
            sync, wait = False, block.wrote
        if not self._writer.acquire(blocking=wait):
            raise WriteLockTaken("a writer of this process holds the write lock")
        try:
            conn = self.conn if wait else self._nowait_conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not wait:
                    raise WriteLockTaken(f"another process holds the write lock ({exc})") from exc
                raise StoreError(
                    f"the town database is busy ({exc}); another writer held it for over "
                    f"{BUSY_TIMEOUT_MS // 1000}s, retry shortly"
                ) from exc
            tx = Tx(conn)
            armed = False
            try:
                armed = self._arm(conn)
                yield tx
            except sqlite3.Error as exc:
                self._rollback(conn, armed)
                raise StoreError(f"database write failed: {exc}; nothing was changed, retry") from exc
            except BaseException:
                self._rollback(conn, armed)
                raise
            try:
                changes = jr.drain(conn)
                if changes:
                    conn.execute(f"UPDATE {jr.SEQ} SET seq = seq + 1")  # no RETURNING: see `jr.drain`
                    seq = conn.execute(f"SELECT seq FROM {jr.SEQ}").fetchone()[0]
                    if self.journal is not None:
                        span = self.journal.append(jr.encode(seq, tx.now, changes))
                conn.execute("COMMIT")
                if span is not None and not sync:
                    self._unsynced = max(self._unsynced, span[1])
                if block is not None:
                    block.wrote = True
                    if span is not None and self.journal is not None and self.journal.fsync:
                        block.end = max(block.end, span[1])
            except (sqlite3.Error, OSError) as exc:
                self._rollback(conn, armed)
                if span is not None and self.journal is not None:
                    with contextlib.suppress(OSError):
                        self.journal.undo(span[0])
                what = "journal" if isinstance(exc, OSError) else "database"
                raise StoreError(f"{what} write failed: {exc}; nothing was changed, retry") from exc
        finally:
            self._writer.release()
        if span is not None and sync and self.journal is not None:
            self._sync(span[1])

    def _arm(self, conn: sqlite3.Connection) -> bool:
        """Make sure `conn` captures for the journal (inside its write transaction, so the schema holds still):
        armed once per connection, and again after any schema change (a migration by another process). Returns
        whether it armed now: the arming is part of the transaction, so a rollback undoes it (`_rollback`)."""
        version = conn.execute("PRAGMA main.schema_version").fetchone()[0]
        if self._armed.get(conn) == version:
            return False
        capture = self._capture
        if capture is None or capture[0] != version:
            capture = self._capture = (version, jr.capture_sql(conn))
        jr.arm(conn, capture[1])
        self._armed[conn] = version
        return True

    def _rollback(self, conn: sqlite3.Connection, armed: bool) -> None:
        """Roll the open transaction back; if it armed the capture, that went with it: arm again next time."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if armed:
            self._armed.pop(conn, None)

    def sync(self) -> None:
        """Make every write this process committed with `sync=False` durable (one fdatasync of the journal)."""
        if not self._unsynced:
            return
        with self._writer:
            end, self._unsynced = self._unsynced, 0
        if end and self.journal is not None:
            self._sync(end)

    def _sync(self, end: int) -> None:
        """Make the committed write durable before the caller hears of it. If the journal cannot be synced, the
        write still committed: make the database itself durable (a checkpoint syncs it) and let the dog report
        the journal, rather than turn a committed write into an error that a retry would duplicate."""
        assert self.journal is not None
        try:
            self.journal.sync(end)
        except OSError as exc:
            self.journal_error = f"journal sync failed: {exc}"
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(FULL)")


def replay(db_path: Path, journal_path: Path, after: int) -> int:
    """Apply the journal's records with seq > `after` to the database file, in one transaction; returns how many.
    Refuses a gap: the records must continue exactly where the database stops."""
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=OFF")  # after-images already hold every cascade's effect
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        # Under the write lock: a line seen past the database's end may have been a write in flight that has
        # committed since; start from where the database is now.
        after = max(after, int(conn.execute(f"SELECT seq FROM {jr.SEQ}").fetchone()[0]))
        expect, n = after + 1, 0
        try:
            for record in jr.read(journal_path, after=after):
                if record["seq"] != expect:
                    raise StoreError(
                        f"the journal {journal_path} jumps from sequence {expect - 1} to {record['seq']}: the "
                        f"records in between are lost; restore from a backup taken at or after {record['seq'] - 1} "
                        f"with {restore_hint(db_path)}"
                    )
                jr.apply(conn, record["changes"])
                expect, n = expect + 1, n + 1
            conn.execute(f"UPDATE {jr.SEQ} SET seq=?", (expect - 1,))
            if n:
                recount(conn)  # derived counts: the upserts above did not keep them
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return n
    finally:
        conn.close()
