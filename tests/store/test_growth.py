"""Nothing in the store grows without bound: connections of retired threads, exited agents in the hot table,
usage rows past their retention, events and the journal once a backup covers them, and status counts."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings

from gastown_mcp.store import Store
from gastown_mcp.store import backup as bk
from gastown_mcp.store import db as db_mod
from gastown_mcp.store import growth as growth_mod
from gastown_mcp.store import journal as jr
from gastown_mcp.supervisor.dogs import Kennel
from gastown_mcp.town import Town, operator
from gastown_mcp.town.budgets import Budgets, Estimate, Usage


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


def test_the_wal_starts_over_when_something_kept_every_passive_checkpoint_from_catching_up(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL starts over only at a write that begins after a checkpoint copied every frame. In the gateway
    under a flood of streams, writes landed during the PASSIVE checkpoints, which so did not catch up: 22 MB more
    WAL for every 500 requests until one happened to (209 MB in one run). Here a reader holds its snapshot through
    each checkpoint (the same state, made deterministic) and lets go a moment later; `checkpoint` must then bring
    the WAL back to its start."""
    monkeypatch.setattr(db_mod, "WAL_RESTART_FRAMES", 64)
    monkeypatch.setattr(db_mod, "WAL_RESTART_WAIT_MS", 10_000)  # the reader below lets go within it
    wal = store.db.wal_path
    insert = "INSERT INTO messages (kind, sender, recipient, body, created_at) VALUES (?,?,?,?,?)"

    def write(n: int) -> None:
        for i in range(n):
            with store.db.write(sync=False) as tx:
                tx.conn.execute(insert, ("mail", "mayor", f"p{i}", "x" * 600, "2026-01-01T00:00:00Z"))

    sizes = []
    for _ in range(12):
        write(40)
        pinned = threading.Event()

        def reader(pinned: threading.Event = pinned) -> None:
            conn = sqlite3.connect(store.db.path, isolation_level=None)
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM messages").fetchone()  # a snapshot: frames after it stay in the WAL
            pinned.set()
            time.sleep(0.05)
            conn.execute("COMMIT")
            conn.close()

        t = threading.Thread(target=reader)
        t.start()
        pinned.wait()
        write(1)  # a frame the PASSIVE checkpoint cannot copy while the reader holds its snapshot
        store.db.checkpoint()
        t.join()
        sizes.append(wal.stat().st_size)
    assert max(sizes) < 2 * sizes[0], sizes  # without the RESTART: 12 rounds of writes, one after another
    assert store.db.query_one("SELECT count(*) FROM messages")[0] == 12 * 41


def test_a_restart_a_long_reader_held_off_is_not_tried_again_before_the_wal_doubles(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each RESTART that a reader holds off makes writers wait for it: a reader that stays (a backup copying a
    large database) must not cost them that wait at every checkpoint."""
    monkeypatch.setattr(db_mod, "WAL_RESTART_FRAMES", 64)
    insert = "INSERT INTO messages (kind, sender, recipient, body, created_at) VALUES (?,?,?,?,?)"

    def write(n: int) -> None:
        for i in range(n):
            with store.db.write(sync=False) as tx:
                tx.conn.execute(insert, ("mail", "mayor", f"p{i}", "x" * 600, "2026-01-01T00:00:00Z"))

    write(80)
    reader = sqlite3.connect(store.db.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()
    write(10)
    first = store.db.checkpoint()
    assert first.restarted is False  # held off: it waited for the reader, writers held meanwhile
    write(10)
    assert store.db.checkpoint().restarted is None  # not again while the WAL is under twice that
    write(200)
    assert store.db.checkpoint().restarted is False  # doubled: tried again
    reader.execute("COMMIT")
    reader.close()
    write(400)
    done = store.db.checkpoint()
    assert done.restarted is True
    write(1)
    assert store.db.checkpoint().frames < 64  # started over, and the next held-off one is tried at once again


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


# -- usage roll-up, event rotation, journal rotation ---------------------------------------------------------------
def _spend(budgets: Budgets) -> None:
    for usage in (Usage(input_tokens=10, output_tokens=5, cache_read_tokens=100), Usage(cache_creation_tokens=50)):
        budgets.settle(budgets.reserve("a", "web", "scripted-standin", Estimate(tokens=1, usd=0)), usage)
    budgets.refused("a", "web", "scripted-standin", 402)
    budgets.settle(budgets.reserve("b", None, "scripted-standin", Estimate(tokens=1, usd=0)), Usage(output_tokens=7))


def test_usage_rolled_into_daily_totals_keeps_usage_reports_and_late_budgets_exact(town: Town, store: Store) -> None:
    budgets = Budgets(store)
    _spend(budgets)
    before = [u.model_dump(exclude={"last_at"}) for u in budgets.usage()]
    moved = town.compact(operator(), at=time.time() + 400 * 86400)
    assert moved["usage_rolled"] == 4
    assert store.db.conn.execute("SELECT count(*) FROM usage").fetchone()[0] == 0
    _spend(budgets)  # new rows beside the rolled-up ones
    after = {u.agent: u for u in budgets.usage()}
    for old in before:
        new = after[old["agent"]]
        assert new.requests == 2 * old["requests"] and new.refused == 2 * old["refused"]
        assert new.input_tokens == 2 * old["input_tokens"]
        assert new.cost_usd == pytest.approx(2 * old["cost_usd"])
        assert new.rig == old["rig"]
    assert budgets.set("overseer", "rig", "web", tokens=10_000).tokens_spent == 2 * 165
    assert budgets.set("overseer", "town", tokens=10_000).tokens_spent == 2 * 172


def test_old_events_move_to_a_compressed_archive_file_and_leave_the_table(town: Town, store: Store) -> None:
    _churn_beads(town)
    n = store.db.conn.execute("SELECT count(*) FROM events").fetchone()[0]
    moved = town.compact(operator(), at=time.time() + 400 * 86400)
    assert moved["events_archived"] == n
    assert store.db.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    [archive] = (town.settings.town_dir / "archive").glob("events-*.jsonl.gz")
    with gzip.open(archive, "rt") as fh:
        lines = [json.loads(line) for line in fh]
    assert len(lines) == n and lines[0]["verb"] == "bead.created" and isinstance(lines[0]["after"], dict)


def test_rotation_takes_the_old_events_in_rounds_and_stops_at_the_first_newer_one(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(growth_mod, "CHUNK", 3)
    stamps = [f"2026-01-0{d}T00:00:00.000000Z" for d in (1, 1, 2, 2, 3, 3, 4)] + ["2026-01-02T12:00:00.000000Z"]
    with store.db.write() as tx:
        for at in stamps:  # the last one was stamped out of order (a clock stepped back)
            tx.execute("INSERT INTO events (at, actor, verb) VALUES (?, 'operator', 'test.event')", (at,))
    moved = store.growth.rotate_events("2026-01-03T00:00:00.000000Z", tmp_path / "archive")
    assert moved == 4  # two rounds: 3, then 1 before the first event of Jan 3
    left = [r["at"][:13] for r in store.db.query("SELECT at FROM events ORDER BY id")]
    assert left == ["2026-01-03T00", "2026-01-03T00", "2026-01-04T00", "2026-01-02T12"]
    archived = sorted((tmp_path / "archive").glob("events-*.jsonl.gz"))
    assert len(archived) == 2


def test_the_journal_drops_what_every_kept_backup_holds_and_restore_still_rebuilds_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bk, "TRIM_MIN_BYTES", 0)
    settings = make_settings(tmp_path / "town")
    settings = settings.model_copy(update={"dogs": settings.dogs.model_copy(update={"backup_keep": 2})})
    store = Store(settings)
    town = Town(store, settings)
    op = operator()
    for round_ in range(4):
        for i in range(30):
            town.bead_create(op, f"r{round_} b{i}", description="x" * 200)
        town.backup_now(op)
    kept = bk.list_backups(settings.backups_dir)
    assert len(kept) == 2
    head = jr.head_seq(settings.journal_path)
    assert 1 < head <= min(k.seq for k in kept) + 1  # trimmed, and still reaching back to the oldest kept backup
    town.bead_create(op, "after the last backup")
    town.bead_claim(op, None)
    state = store.db.journal_state()
    assert state["replaced"] is False and state["tail_seq"] == state["db_seq"]
    assert {f.check: f.state for f in Kennel(town, doctor=True, fix=False).run()}["journal"] == "green"
    want = bk.content_hash(settings.db_path)
    store.close()
    for choice in (None, Path(kept[-1].path)):  # the newest backup, and the oldest kept one
        settings.db_path.unlink(missing_ok=True)
        report = bk.restore(settings.db_path, settings.journal_path, settings.backups_dir, choice)
        assert report.content_hash == want


def test_another_process_sees_a_trimmed_journal_as_a_rotation_not_a_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bk, "TRIM_MIN_BYTES", 0)
    settings = make_settings(tmp_path / "town")
    first, second = Store(settings), Store(settings)
    try:
        t1, t2 = Town(first, settings), Town(second, settings)
        op = operator()
        for i in range(20):
            t2.bead_create(op, f"b{i}")
        info = bk.backup(first.db, settings.backups_dir)  # the backup holds everything: the journal is emptied
        assert jr.head_seq(settings.journal_path) == info.seq + 1 and list(jr.read(settings.journal_path)) == []
        t2.bead_create(op, "written by the other process's journal handle")
        t1.bead_create(op, "and by the rotator's")
        assert second.db.journal_state()["replaced"] is False
        assert [r["seq"] for r in jr.read(settings.journal_path)] == [info.seq + 1, info.seq + 2]
    finally:
        first.close()
        second.close()
