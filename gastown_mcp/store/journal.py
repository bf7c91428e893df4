"""The journal: a complete logical log of the town database, one JSON line per committed write transaction.

Each line is `{"seq": N, "at": ..., "changes": [[table, rowid, row-or-null], ...]}`: the after-image of every
row the transaction touched (null = deleted), captured by triggers on every table, so replaying the lines in
order onto a backup taken at sequence B rebuilds the database row for row. Secrets appear only as the hashes
the tables hold. The order and the recovery rule are in `db.py`; the README states them.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from gastown_mcp.errors import StoreError

CAPTURE = "_capture"  # temp table: (tbl, rid, image) touched by the open transaction; drained before COMMIT
SEQ = "_journal"  # one row: the sequence number of the last journaled transaction, committed with it
GONE = ""  # a capture note's image for a row the transaction deleted (no JSON image is empty)


class Image(str):
    """A row's after-image as JSON text, made by the capture trigger itself: the journal line takes it as is."""

    __slots__ = ()


Change = tuple[str, int, dict[str, Any] | Image | None]


def captured_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table whose rows the journal carries: all but SQLite's own, ours (`_*`) and WITHOUT ROWID ones."""
    found = conn.execute(
        "SELECT name, sql FROM main.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    return [r[0] for r in found if "WITHOUT ROWID" not in (r[1] or "").upper()]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def capture_sql(conn: sqlite3.Connection) -> list[str]:
    """The statements that arm a connection's capture: a temp table and three temp triggers per captured table.

    They live in the connection's temp schema, so the rows they note never reach the database file (no WAL page
    per write). The insert and update triggers note the row's after-image as JSON (`json_object` over its
    columns, in table order, as `SELECT *` gives them), so the journal line needs no second read. A REAL goes in
    as 17 significant digits (`_exact_real`: what a double needs to come back the same), since SQLite's own JSON
    keeps only 15; one whose text would not come back the same, or a BLOB (JSON has no bytes), leaves the row
    noted without an image (NULL), to be read back at drain time. A deleted row, or an update's old rowid, is
    noted as `GONE`: the journal records a deletion without reading anything. A rowid deleted and then inserted
    again in the same transaction ends with the insert's note (each note replaces the one before)."""
    out = [
        f"CREATE TEMP TABLE IF NOT EXISTS {CAPTURE} (tbl TEXT NOT NULL, rid INTEGER NOT NULL, image TEXT, "
        "PRIMARY KEY (tbl, rid)) WITHOUT ROWID"
    ]
    for table in captured_tables(conn):
        info = conn.execute(f"PRAGMA main.table_info({_quote(table)})").fetchall()
        q, lit = _quote(table), _literal(table)
        unfit, fields = [], []
        for _, col, declared, *_ in info:
            v = f"NEW.{_quote(col)}"
            if _text_affinity(declared):  # holds text, NULL or a BLOB, never a REAL
                unfit.append(f"typeof({v}) = 'blob'")
                fields.append(f"{_literal(col)}, {v}")
            else:
                unfit.append(f"typeof({v}) = 'blob' OR (typeof({v}) = 'real' AND NOT {_exact_real(v)})")
                fields.append(f"{_literal(col)}, CASE WHEN typeof({v}) = 'real' THEN json({_digits(v)}) ELSE {v} END")
        image = f"CASE WHEN {' OR '.join(unfit)} THEN NULL ELSE json_object({', '.join(fields)}) END"
        note = f"INSERT OR REPLACE INTO {CAPTURE} (tbl, rid, image) VALUES ({lit}"
        triggers = {
            "i": f"AFTER INSERT ON main.{q} BEGIN {note}, NEW.rowid, {image}); END",
            "u": f"AFTER UPDATE ON main.{q} BEGIN {note}, NEW.rowid, {image}); "
            f"INSERT OR REPLACE INTO {CAPTURE} (tbl, rid, image) SELECT {lit}, OLD.rowid, '{GONE}' "
            "WHERE OLD.rowid <> NEW.rowid; END",
            "d": f"AFTER DELETE ON main.{q} BEGIN {note}, OLD.rowid, '{GONE}'); END",
        }
        out += [f"CREATE TEMP TRIGGER {_quote(f'_cap_{table}_{k}')} {body}" for k, body in triggers.items()]
    return out


def _text_affinity(declared: str | None) -> bool:
    """Whether a column declared as `declared` has TEXT affinity (SQLite's rule: no INT in the name, and CHAR,
    CLOB or TEXT): a number stored there becomes text."""
    t = (declared or "").upper()
    return "INT" not in t and any(k in t for k in ("CHAR", "CLOB", "TEXT"))


def _digits(value: str) -> str:
    """A REAL as text with 17 significant digits (and a decimal point, so it reads back as a float)."""
    return f"printf('%!.17g', {value})"


def _exact_real(value: str) -> str:
    """Whether the REAL `value`'s 17-digit text reads back as the same double. SQLite's printf is not correctly
    rounded at every magnitude (3.40 misses some beyond 1e200), so the text must read back equal in SQLite too
    and the magnitude stay within [1e-200, 1e200]: no failure was found there in 760k values, random bit
    patterns among them, against Python's own reading. Money, durations and prices sit far inside."""
    return f"({value} = 0 OR (abs({value}) BETWEEN 1e-200 AND 1e200 AND CAST({_digits(value)} AS REAL) = {value}))"


def arm(conn: sqlite3.Connection, statements: list[str]) -> None:
    """Give `conn` the capture `statements` (from `capture_sql`), replacing any it had (inside a transaction)."""
    for (name,) in conn.execute("SELECT name FROM temp.sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f"DROP TRIGGER temp.{_quote(name)}")
    for stmt in statements:
        conn.execute(stmt)


def _encode(value: Any) -> Any:
    return {"$b64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value


def _decode(value: Any) -> Any:
    return base64.b64decode(value["$b64"]) if isinstance(value, dict) else value


def drain(conn: sqlite3.Connection) -> list[Change]:
    """The after-image of every row the open transaction touched, in (table, rowid) order, and forget them (inside
    the transaction): one statement takes the list with the images the triggers made, another empties it; rows
    noted without an image are read, one statement per table. (Neither statement uses RETURNING: SQLite builds a
    scratch table for each RETURNING statement, which cost more than the second statement.)"""
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples
    touched: list[tuple[str, int, str | None]] = cur.execute(
        f"SELECT tbl, rid, image FROM temp.{CAPTURE}"  # its primary key's order: (table, rowid)
    ).fetchall()
    if not touched:
        return []
    conn.execute(f"DELETE FROM temp.{CAPTURE}")
    missing: dict[str, list[int]] = {}
    for tbl, rid, image in touched:
        if image is None:
            missing.setdefault(tbl, []).append(rid)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for tbl, rids in missing.items():
        q = _quote(tbl)
        for i in range(0, len(rids), 500):
            chunk = rids[i : i + 500]
            cur = conn.execute(
                f'SELECT rowid AS "__rowid", * FROM main.{q} WHERE rowid IN ({",".join("?" * len(chunk))})', chunk
            )
            names = [d[0] for d in cur.description][1:]
            for values in cur:
                image = values[1:]
                if bytes in map(type, image):
                    rows[tbl, values[0]] = {n: _encode(v) for n, v in zip(names, image, strict=True)}
                else:
                    rows[tbl, values[0]] = dict(zip(names, image, strict=True))
    return [(tbl, rid, Image(image) if image else rows.get((tbl, rid))) for tbl, rid, image in touched]


def apply(conn: sqlite3.Connection, changes: Iterable[Change | list[Any]]) -> None:
    """Replay one transaction's after-images (inside the caller's transaction, with foreign keys off)."""
    upserts = []
    for tbl, rid, row in changes:
        q = _quote(tbl)
        if row is None:
            conn.execute(f"DELETE FROM {q} WHERE rowid=?", (rid,))
        else:
            upserts.append((q, rid, row))
    for q, rid, row in upserts:  # deletes first: a final state never collides with itself
        cols = list(row)
        names = ",".join(map(_quote, cols))
        conn.execute(
            f"INSERT OR REPLACE INTO {q} (rowid,{names}) VALUES (?{',?' * len(cols)})",
            (rid, *(_decode(row[c]) for c in cols)),
        )


class Journal:
    """The append-only file. Appends happen under the database's write lock, so lines land in `seq` order
    across every process; `sync()` is the group commit: one fdatasync covers every line written before it."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._ino: int | None = None
        self._synced = 0  # bytes of this file known to be on disk
        self.replaced = False  # the file vanished under us and a fresh one was started (the journal dog reports it)

    def _open(self) -> tuple[int, int]:
        """The open file and its size, reopened if someone deleted or replaced it (a fresh journal lacks the
        earlier lines: `replaced` is set so the journal dog takes a backup that covers them). The size is where
        the next line lands: every append holds the database's write lock, so no one grows the file meanwhile."""
        if self._fd is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_ino == self._ino:
                return self._fd, st.st_size
            if not self._rotated_by_peer():
                self.replaced = True
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        self._fd, self._ino, self._synced = fd, st.st_ino, 0
        return fd, st.st_size

    def _rotated_by_peer(self) -> bool:
        """Whether the file now at our path is a rotation (`trim`) by another process: it starts with the marker."""
        try:
            with open(self.path, "rb") as fh:
                return _is_marker(fh.read(128))
        except OSError:
            return False

    def trim(self, upto: int, committed: int, locked: Callable[[], contextlib.AbstractContextManager[Any]]) -> int:
        """Drop the records with seq <= `upto` (every kept backup covers them); returns the bytes dropped.

        The new file starts with a marker `{"seq": upto, "rotated": true}`: the journal holds every write after
        `upto`, and other processes reopen it as a rotation rather than report the journal replaced. The
        records up to `committed` (the database's sequence number) are final, so they are copied without
        holding anything; the rest is copied under `locked()` (the database's write lock, which every append
        holds) before the new file replaces the old one."""
        cut, stable = offset_after(self.path, upto), offset_after(self.path, committed)
        if cut == 0:
            return 0
        part = Path(str(self.path) + ".trim")
        with open(self.path, "rb") as src, open(part, "wb") as dst:
            dst.write(_marker(upto))
            src.seek(cut)
            _copy(src, dst, max(0, stable - cut))
            with locked(), self._lock:
                _copy(src, dst, None)
                dst.flush()
                os.fsync(dst.fileno())
                ino, size = os.fstat(dst.fileno()).st_ino, dst.tell()
                lock_fd = os.open(str(self.path) + ".sync", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX)
                    os.replace(part, self.path)
                    dir_fd = os.open(self.path.parent, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
                    os.pwrite(lock_fd, struct.pack("<QQ", ino, size), 0)
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
                finally:
                    os.close(lock_fd)
                if self._fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(self._fd)
                    self._fd = None
        return cut

    def append(self, line: bytes) -> tuple[int, int]:
        """Write one line; returns (offset before it, offset after it) for `sync()` and `undo()`."""
        with self._lock:
            fd, start = self._open()
            written = os.write(fd, line)
            if written != len(line):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise OSError(f"short write to {self.path}")
            return start, start + written

    def undo(self, start: int) -> None:
        """Cut a line whose transaction did not commit (we still hold the write lock: nothing came after it)."""
        with self._lock:
            if self._fd is not None:
                os.ftruncate(self._fd, start)
                self._synced = min(self._synced, start)

    def sync(self, end: int) -> None:
        """Return once the file is on disk up to `end`. Group commit across threads and processes: writers queue
        on a lock file that also holds (inode, synced offset); one fdatasync serves every line written before it
        began, so a waiter usually finds its line already synced by the one before it."""
        if not self.fsync:
            return
        with self._sync_lock:
            if self._synced >= end or self._fd is None:
                return
            fd = self._fd
            if self._lock_fd is None:
                self._lock_fd = os.open(str(self.path) + ".sync", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(self._lock_fd, 16, 0)
                ino, synced = struct.unpack("<QQ", raw) if len(raw) == 16 else (0, 0)
                if ino == self._ino and synced >= end:
                    self._synced = max(self._synced, synced)
                    return
                target = os.lseek(fd, 0, os.SEEK_END)
                os.fdatasync(fd)
                self._synced = max(self._synced, target)
                os.pwrite(self._lock_fd, struct.pack("<QQ", self._ino or 0, target), 0)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fd = self._lock_fd = None


def start_after(path: Path, seq: int) -> None:
    """A new journal at `path` that holds every write after `seq` (none yet): its rotation marker alone, on disk."""
    with open(path, "xb") as fh:
        fh.write(_marker(seq))
        fh.flush()
        os.fsync(fh.fileno())


def _marker(upto: int) -> bytes:
    return (json.dumps({"seq": upto, "rotated": True, "changes": []}, separators=(",", ":")) + "\n").encode()


def _is_marker(raw: bytes) -> bool:
    return raw.startswith(b'{"seq":') and b'"rotated":true' in raw[:64]


def _seq_of_line(raw: bytes) -> int | None:
    """A line's sequence number, read from its head (`{"seq":N,...`) without parsing the rest."""
    if raw.startswith(b'{"seq":'):
        end = raw.find(b",", 7)
        with contextlib.suppress(ValueError):
            return int(raw[7:end])
    return None


def offset_after(path: Path, seq: int) -> int:
    """The byte offset just past the last complete record with sequence number <= `seq` (0: none)."""
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            n = _seq_of_line(raw)
            if n is None or n > seq or not raw.endswith(b"\n"):
                break
            offset += len(raw)
    return offset


def _copy(src: Any, dst: Any, limit: int | None) -> None:
    """Copy `limit` bytes (None: to the end) from `src` to `dst` in large blocks."""
    while limit is None or limit > 0:
        block = src.read(1 << 20 if limit is None else min(1 << 20, limit))
        if not block:
            return
        dst.write(block)
        if limit is not None:
            limit -= len(block)


_LINE = json.JSONEncoder(separators=(",", ":"))  # one encoder for every line (json.dumps would make one a call)


def encode(seq: int, at: str, changes: list[Change]) -> bytes:
    """One journal line; row images the triggers made go in as the JSON text they are."""
    if not any(type(row) is Image for _, _, row in changes):
        return (_LINE.encode({"seq": seq, "at": at, "changes": changes}) + "\n").encode()
    parts = [
        f"[{_LINE.encode(tbl)},{rid},{row}]" if type(row) is Image else _LINE.encode([tbl, rid, row])
        for tbl, rid, row in changes
    ]
    return f'{{"seq":{seq},"at":{_LINE.encode(at)},"changes":[{",".join(parts)}]}}\n'.encode()


def read(path: Path, *, after: int = 0) -> Iterator[dict[str, Any]]:
    """The journal's records with seq > `after`, in order. A torn last line (a crash mid-write) is ignored;
    a bad line before the end is damage and raises."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    for i, raw in enumerate(lines[: last + 1]):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            seq = int(record["seq"])
        except (ValueError, KeyError, TypeError) as exc:
            if i == last:
                return  # torn tail: that transaction never committed (the line is written before COMMIT)
            raise StoreError(f"the journal {path} is damaged at line {i + 1}: {exc}") from exc
        if record.get("rotated"):
            continue  # a rotation's marker: the records up to its seq are in the backups, not here
        if seq > after:
            yield record


def tail_seq(path: Path) -> int:
    """The last complete record's sequence number (0 for a missing or empty journal); reads only the end."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    with open(path, "rb") as fh:
        chunk = 1 << 16
        while True:
            fh.seek(max(0, size - chunk))
            lines = fh.read().split(b"\n")
            for raw in reversed(lines[1:] if size > chunk else lines):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if raw.strip():
                        return int(json.loads(raw)["seq"])
            if size <= chunk:
                return 0
            chunk *= 4


def head_seq(path: Path) -> int:
    """The first record's sequence number (0 for a missing or empty journal); for a rotated journal, the one
    after its marker's (what the journal holds from)."""
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(raw)
                    return int(record["seq"]) + (1 if record.get("rotated") else 0)
                return 0
    return 0
