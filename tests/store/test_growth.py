"""Nothing in the store grows without bound: connections of retired threads, exited agents in the hot table,
usage rows past their retention, events and the journal once a backup covers them, and status counts."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from gastown_mcp.store import Store
from gastown_mcp.store import backup as bk
from gastown_mcp.town import Town, operator
from conftest import make_settings


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _churn(store: Store, threads: int) -> None:
    """Each thread reads once and ends, as the worker threads anyio retires do."""

    def work() -> None:
        store.db.query("SELECT count(*) FROM beads")

    for _ in range(threads):
        t = threading.Thread(target=work)
        t.start()
        t.join()


def test_connections_and_fds_stay_bounded_after_many_thread_churns(store: Store) -> None:
    _churn(store, 20)
    conns, fds = store.db.connections(), _fds()
    for _ in range(5):
        _churn(store, 40)
    assert store.db.connections() <= conns
    assert _fds() <= fds


def test_a_retired_threads_connection_is_reused_not_left_open(store: Store, tmp_path: Path) -> None:
    before = store.db.connections()
    barrier = threading.Barrier(4)

    def work() -> None:
        store.db.query("SELECT 1")
        barrier.wait()  # four threads at once really need four connections

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    grown = store.db.connections()
    assert grown >= before + 3
    _churn(store, 30)
    assert store.db.connections() == grown


# -- maintained counts -----------------------------------------------------------------------------------------
def _scanned(store: Store) -> dict[str, Any]:
    conn = store.db.conn
    by_status = dict(conn.execute("SELECT status, count(*) FROM beads GROUP BY status").fetchall())
    ready = conn.execute(
        "SELECT count(*) FROM beads WHERE status='open' AND open_blockers=0 AND assignee IS NULL"
    ).fetchone()[0]
    pending = conn.execute("SELECT count(*) FROM beads WHERE merge_pending=1").fetchone()[0]
    return {"by_status": by_status, "ready": ready, "awaiting_merge": pending}


def _maintained(town: Town) -> dict[str, Any]:
    s = town.status(operator())
    return {"by_status": s.beads_by_status, "ready": s.ready, "awaiting_merge": s.awaiting_merge}


def _churn_beads(town: Town) -> list[str]:
    op = operator()
    ids = [town.bead_create(op, f"b{i}", priority=i % 5).id for i in range(12)]
    town.bead_link(op, ids[1], ids[0], "blocks")
    town.bead_link(op, ids[2], ids[1], "blocks")
    town.bead_claim(op, ids[0])
    town.bead_complete(op, ids[0], "done")
    town.bead_claim(op, ids[3])
    town.bead_release(op, ids[3], "later")
    town.bead_claim(op, ids[4])
    town.bead_update(op, ids[5], status="cancelled", reason="dup")
    town.bead_update(op, ids[6], status="blocked", reason="waits")
    town.bead_update(op, ids[6], status="open")
    return ids


def test_status_counts_are_maintained_exactly_through_every_kind_of_write(town: Town, store: Store) -> None:
    _churn_beads(town)
    assert _maintained(town) == _scanned(store)
    assert _maintained(town)["by_status"] == {"open": 9, "in_progress": 1, "done": 1, "cancelled": 1}


def test_counts_stay_exact_after_a_restore_from_backup_and_journal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "town")
    store = Store(settings)
    town = Town(store, settings)
    ids = _churn_beads(town)
    town.backup_now(operator())
    town.bead_claim(operator(), ids[7])
    town.bead_complete(operator(), ids[7], "done too")
    want = _maintained(town)
    store.close()
    settings.db_path.unlink()
    bk.restore(settings.db_path, settings.journal_path, settings.backups_dir)
    store = Store(settings)
    try:
        assert _maintained(Town(store, settings)) == want == _scanned(store)
    finally:
        store.close()
