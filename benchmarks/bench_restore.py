"""Backup and restore times for a town of 10k and 100k beads, and what the journal costs per write.

For each size: beads are written through the store's real write path (capture triggers, journal, fdatasync) in
transactions of 500, half before a verified online backup and half after; then single claims (one journal
record each) on top. The database is deleted and `restore()` rebuilds it from the backup plus the journal;
the content hash must equal the lost database's. "From the journal alone" replays every record into an empty
database. Run: `.venv/bin/python benchmarks/bench_restore.py` (figures to stdout and
benchmarks/results/restore.json); claims/s with and without the fsync: `bench_claims_store.py [--no-durable]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _report import write_report

from gastown_mcp.config import Settings
from gastown_mcp.store import Store
from gastown_mcp.store import backup as bk
from gastown_mcp.store.db import now_iso

SIZES = (10_000, 100_000)
CLAIMS = 2_000


def seed(store: Store, start: int, n: int) -> None:
    base = time.time()
    for lo in range(start, start + n, 500):
        with store.db.write() as tx:
            tx.conn.executemany(
                "INSERT INTO beads (id, title, description, priority, created_by, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    (
                        f"gt-{i:07d}",
                        f"bead {i}",
                        f"description of bead {i} " * 4,
                        i % 5,
                        "mayor",
                        now_iso(base + i),
                        now_iso(base + i),
                    )
                    for i in range(lo, min(lo + 500, start + n))
                ),
            )


def run(n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gastown-bench-") as tmp:
        settings = Settings(town_dir=Path(tmp))
        store = Store(settings)
        seed(store, 0, n // 2)
        info = bk.backup(store.db, settings.backups_dir)
        seed(store, n // 2, n - n // 2)
        began = time.perf_counter()
        for i in range(CLAIMS):
            store.beads.claim(f"polecat-{i % 8}", None, 600)
        claims_s = CLAIMS / (time.perf_counter() - began)
        store.close()
        live = bk.content_hash(settings.db_path)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
        report = bk.restore(settings.db_path, settings.journal_path, settings.backups_dir)
        assert report.content_hash == live, "restore does not equal the lost database"
        for f in settings.backups_dir.glob("*"):
            f.unlink()
        Path(report.moved_aside[0]).unlink() if report.moved_aside else None
        settings.db_path.unlink()
        began = time.perf_counter()
        full = bk.restore(settings.db_path, settings.journal_path, settings.backups_dir)
        full_s = time.perf_counter() - began
        assert full.content_hash == live
        return {
            "beads": n,
            "backup_seconds": info.seconds,
            "backup_mb": round(info.bytes / 1e6, 1),
            "journal_mb": round(settings.journal_path.stat().st_size / 1e6, 1),
            "records_replayed": report.replayed,
            "restore_seconds": report.seconds,
            "journal_only_restore_seconds": round(full_s, 3),
            "claims_per_s_single_process": round(claims_s, 1),
            "hash_equal": True,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    rows = [run(n) for n in args.beads]
    print(f"{'beads':>7} {'backup s':>9} {'backup MB':>10} {'restore s':>10} {'replayed':>9} {'journal-only s':>15}")
    for r in rows:
        print(
            f"{r['beads']:>7} {r['backup_seconds']:>9} {r['backup_mb']:>10} {r['restore_seconds']:>10}"
            f" {r['records_replayed']:>9} {r['journal_only_restore_seconds']:>15}"
        )
    write_report("restore", rows)


if __name__ == "__main__":
    main()
