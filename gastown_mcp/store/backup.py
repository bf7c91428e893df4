"""Backups, verification, restore and content hashes of the town database.

A backup is a page copy through SQLite's online backup API (not `VACUUM INTO`: vacuum may renumber the rowids
the journal's after-images are keyed by), written beside a manifest with its sequence number, row counts and
content hash. It counts only once verified: integrity check, the counts of the snapshot it copied, the same
sequence number. `restore()` = newest verified backup + journal replay from its sequence number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gastown_mcp.errors import NotFound, StoreError
from gastown_mcp.models import now_iso
from gastown_mcp.store import journal as jr
from gastown_mcp.store.db import BUSY_TIMEOUT_MS, Database, replay, restore_hint

SIDE_FILES = ("-wal", "-shm")
TRIM_MIN_BYTES = 8 << 20  # a journal's covered part is dropped only once it is this big


@dataclass
class BackupInfo:
    path: str
    seq: int
    at: str
    counts: dict[str, int]
    content_hash: str
    bytes: int
    seconds: float
    verified: bool = True

    @classmethod
    def load(cls, manifest: Path) -> BackupInfo:
        return cls(**json.loads(manifest.read_text()))


@dataclass
class RestoreReport:
    backup: str | None
    backup_seq: int
    replayed: int
    seq: int
    content_hash: str
    moved_aside: list[str]
    seconds: float


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in jr.captured_tables(conn)}


def seq_of(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute(f"SELECT seq FROM {jr.SEQ}").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def content_hash(path: Path) -> str:
    """sha256 over every captured table's rows (with rowids) in rowid order, and the sequence number."""
    conn = _connect(path)
    try:
        return _hash(conn)
    finally:
        conn.close()


def _hash(conn: sqlite3.Connection) -> str:
    h = hashlib.sha256(f"seq={seq_of(conn)}\n".encode())
    for table in jr.captured_tables(conn):
        h.update(f"table={table}\n".encode())
        cur = conn.execute(f'SELECT rowid, * FROM "{table}" ORDER BY rowid')
        cols = [d[0] for d in cur.description]
        h.update((json.dumps(cols) + "\n").encode())
        for row in cur:
            h.update((json.dumps([v.hex() if isinstance(v, bytes) else v for v in row]) + "\n").encode())
    return h.hexdigest()


def integrity(path: Path, *, full: bool = True) -> list[str]:
    conn = _connect(path)
    try:
        found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)" if full else "PRAGMA quick_check(20)")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()
    return [] if found == ["ok"] else found


def backup(db: Database, dest: Path, *, keep: int = 24, journal_max_bytes: int | None = None) -> BackupInfo:
    """Copy the live database to `dest` online, verify the copy, keep the newest `keep` verified backups, and
    let the journal drop what they hold (`rotate_journal`)."""
    began = time.monotonic()
    dest.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:].replace(".", "")
    part = dest / f"town-{stamp}.db.part"
    src = _connect(db.path)
    try:
        src.execute("BEGIN")  # one read snapshot for the counts and the copy
        want = counts(src)
        seq = seq_of(src)
        out = sqlite3.connect(part)
        try:
            src.backup(out)
        finally:
            out.close()
        src.execute("COMMIT")
    except sqlite3.Error as exc:
        part.unlink(missing_ok=True)
        raise StoreError(f"backup of {db.path} failed: {exc}; check free space under {dest} and retry") from exc
    finally:
        src.close()
    problems = integrity(part)
    check = _connect(part)
    try:
        got, got_seq, digest = counts(check), seq_of(check), _hash(check)
    finally:
        check.close()
    if problems or got != want or got_seq != seq:
        part.unlink(missing_ok=True)
        raise StoreError(
            f"the backup of {db.path} did not verify ({problems or 'row counts differ'}); the database itself may be "
            f"damaged: run `gastown doctor`"
        )
    final = dest / f"town-{seq:012d}-{stamp}.db"
    os.replace(part, final)
    _fsync_dir(dest)
    info = BackupInfo(
        path=str(final),
        seq=seq,
        at=now_iso(),
        counts=got,
        content_hash=digest,
        bytes=final.stat().st_size,
        seconds=round(time.monotonic() - began, 3),
    )
    manifest = final.with_suffix(".json")
    manifest.write_text(json.dumps(asdict(info), indent=1))
    _fsync_dir(dest)
    prune(dest, keep)
    rotate_journal(db, dest, journal_max_bytes)
    return info


def rotate_journal(db: Database, dest: Path, max_bytes: int | None = None) -> int:
    """Drop the journal records every kept verified backup already holds (restore from any of them still
    works); returns the bytes dropped. Done once they are half the journal and `TRIM_MIN_BYTES`, so the
    records kept are rewritten about once per byte written and a small journal is left alone.

    A journal past `max_bytes` (a flood of writes between backups) keeps only what the newest backup lacks:
    restore from the newest still replays to the last write; an older backup restores to its own point only
    (`restore(..., journal=False)`)."""
    kept = list_backups(dest)
    if not kept:
        return 0
    if max_bytes is not None and db.journal_bytes() > max_bytes:
        return db.trim_journal(kept[0].seq, min_fraction=0.0, min_bytes=0)
    return db.trim_journal(min(info.seq for info in kept), min_fraction=0.5, min_bytes=TRIM_MIN_BYTES)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_backups(dest: Path) -> list[BackupInfo]:
    """Verified backups, newest (highest sequence number) first."""
    if not dest.exists():
        return []
    found = []
    for manifest in dest.glob("town-*.json"):
        with contextlib.suppress(ValueError, TypeError, OSError):
            info = BackupInfo.load(manifest)
            if info.verified and Path(info.path).exists():
                found.append(info)
    return sorted(found, key=lambda i: (i.seq, i.path), reverse=True)


def prune(dest: Path, keep: int) -> list[str]:
    """Remove all but the `keep` newest verified backups, and any half-written ones."""
    removed = []
    for info in list_backups(dest)[keep:]:
        Path(info.path).unlink(missing_ok=True)
        Path(info.path).with_suffix(".json").unlink(missing_ok=True)
        removed.append(info.path)
    for part in dest.glob("*.db.part"):
        if time.time() - part.stat().st_mtime > 3600:
            part.unlink(missing_ok=True)
    return removed


def restore(
    db_path: Path, journal_path: Path, dest: Path, chosen: Path | None = None, *, journal: bool = True
) -> RestoreReport:
    """Rebuild `db_path` from a verified backup (newest, or `chosen`) plus the journal after its sequence number.

    A damaged database (and its -wal/-shm, which must never meet the restored file) is moved aside, not deleted.
    Without any backup, a journal that starts at sequence 1 rebuilds the town from nothing. With `journal`
    False, the chosen backup is restored as it was, nothing replayed: for one the journal no longer reaches,
    accepting the loss of every write after it.
    """
    began = time.monotonic()
    if not journal and chosen is None:
        raise StoreError("restoring without the journal needs the backup to restore named: `gastown restore BACKUP`")
    start = _pick(dest, chosen, journal_path if journal else None)
    work = db_path.with_name(db_path.name + ".restoring")
    for suffix in ("", *SIDE_FILES):
        Path(str(work) + suffix).unlink(missing_ok=True)
    if start is not None:
        shutil.copyfile(start.path, work)
    base_seq = start.seq if start is not None else 0
    Database(work).close()  # migrate (a backup may predate a migration) and install the capture triggers
    replayed = replay(work, journal_path, base_seq) if journal else 0
    problems = integrity(work)
    if problems:
        raise StoreError(f"the restored database failed its integrity check ({problems[0]}); {work} is kept for study")
    moved = []
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    damaged = _unused(Path(f"{db_path}.damaged-{stamp}"), ("", *SIDE_FILES))
    for suffix in ("", *SIDE_FILES):
        old = Path(str(db_path) + suffix)
        if old.exists():
            aside = Path(f"{damaged}{suffix}")
            os.replace(old, aside)
            moved.append(str(aside))
    for suffix in SIDE_FILES:
        Path(str(work) + suffix).unlink(missing_ok=True)
    os.replace(work, db_path)
    if not journal:
        moved += _set_aside_after(journal_path, dest, base_seq, stamp)
    _fsync_dir(db_path.parent)
    conn = _connect(db_path)
    try:
        seq, digest = seq_of(conn), _hash(conn)
    finally:
        conn.close()
    return RestoreReport(
        backup=start.path if start else None,
        backup_seq=base_seq,
        replayed=replayed,
        seq=seq,
        content_hash=digest,
        moved_aside=moved,
        seconds=round(time.monotonic() - began, 3),
    )


def _set_aside_after(journal_path: Path, dest: Path, seq: int, stamp: str) -> list[str]:
    """After a restore to sequence `seq` without the journal, what holds the writes given up: the journal and
    the backups past `seq`, moved aside (never deleted) so that nothing ever replays them onto the restored
    database, which goes on from `seq` in a new journal (starting with a rotation marker at `seq`)."""
    moved = []
    if journal_path.exists():
        aside = _unused(journal_path.with_name(f"{journal_path.name}.after-{seq}-{stamp}"))
        os.replace(journal_path, aside)
        moved.append(str(aside))
    jr.start_after(journal_path, seq)
    later = [info for info in list_backups(dest) if info.seq > seq]
    if later:
        folder = _unused(dest / f"after-{seq}-{stamp}")
        folder.mkdir()
        for info in later:
            for path in (Path(info.path), Path(info.path).with_suffix(".json")):
                os.replace(path, folder / path.name)
        _fsync_dir(dest)
        moved.append(str(folder))
    return moved


def _unused(path: Path, suffixes: tuple[str, ...] = ("",)) -> Path:
    """`path`, or `path-2`, `path-3` ...: the first name not taken with any of `suffixes` (so two restores in one
    second keep both what each set aside)."""
    n, found = 1, path
    while any(Path(f"{found}{suffix}").exists() for suffix in suffixes):
        n += 1
        found = path.with_name(f"{path.name}-{n}")
    return found


def _pick(dest: Path, chosen: Path | None, journal_path: Path | None) -> BackupInfo | None:
    """The backup to start from; `journal_path` None: the chosen one, whatever the journal holds."""
    head = jr.head_seq(journal_path) if journal_path is not None else 0
    if chosen is not None:
        manifest = Path(chosen).with_suffix(".json")
        if not manifest.exists():
            raise NotFound(f"{chosen} is not a verified backup (no {manifest.name} beside it); list them in {dest}")
        info = BackupInfo.load(manifest)
        if head and head > info.seq + 1:
            raise StoreError(
                f"the journal starts at sequence {head}, after backup {chosen} (sequence {info.seq}) ends: writes "
                f"{info.seq + 1}..{head - 1} exist nowhere. Restore the newest backup instead (`gastown restore`), or "
                f"this one as it was, losing every write after it: `gastown restore {chosen} --without-journal`"
            )
        return info
    backups = list_backups(dest)
    for info in backups:
        if not integrity(Path(info.path), full=False):
            if head and head > info.seq + 1:
                raise StoreError(
                    f"the newest sound backup ({info.path}, sequence {info.seq}) is older than the journal's first "
                    f"record ({head}): writes {info.seq + 1}..{head - 1} exist nowhere; restore it as it was, losing "
                    f"every write after it, with `gastown restore {info.path} --without-journal`"
                )
            return info
    if head <= 1:
        return None  # the journal holds the whole history (or there is none): rebuild from nothing
    raise NotFound(f"no verified backup in {dest} and the journal starts at sequence {head}; nothing can rebuild it")


def describe_hint(db_path: Path) -> str:
    return restore_hint(db_path)


def as_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)
