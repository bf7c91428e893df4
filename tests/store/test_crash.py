"""A writer killed with SIGKILL leaves a database that opens, passes `integrity_check`, and holds no half-made bead.

The writers are spawned processes that tell the parent through a pipe how far they got; the parent kills
them at that point, then reopens the town as a fresh process would.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from gastown_mcp.config import Settings
from gastown_mcp.models import Verb
from gastown_mcp.store import Store

pytestmark = pytest.mark.slow

WAIT_S = 30


def write_and_hang(town_dir: str, bead_id: str, labels: int, pipe: Any) -> None:
    """Open a write transaction, make a bead with its labels, tell the parent, and wait to be killed."""
    store = Store(Settings(town_dir=Path(town_dir)))
    with store.db.write() as tx:
        tx.execute(
            "INSERT INTO beads (id, title, created_by, created_at, updated_at) VALUES (?,?,?,?,?)",
            (bead_id, "half made", "crasher", tx.now, tx.now),
        )
        for i in range(labels):
            tx.execute("INSERT INTO labels (bead_id, label) VALUES (?,?)", (bead_id, f"label-{i:06d}-" + "x" * 80))
        tx.event("crasher", Verb.bead_created, bead_id=bead_id)
        pipe.send("inside")
        pipe.recv()  # blocks until SIGKILL


def create_forever(town_dir: str, run: int, pipe: Any) -> None:
    """Create beads with labels as fast as possible, reporting each one after it commits."""
    store = Store(Settings(town_dir=Path(town_dir)))
    i = 0
    while True:
        bead = store.beads.create(
            "crasher", title=f"run {run} bead {i}", labels=[f"run-{run}", f"n-{i}", "crash"], priority=i % 5
        )
        pipe.send(bead.id)
        i += 1


def reopen(town_dir: Path) -> Store:
    store = Store(Settings(town_dir=town_dir))
    assert store.db.query_one("PRAGMA integrity_check")[0] == "ok"
    assert store.db.query("PRAGMA foreign_key_check") == []
    return store


def kill(proc: Any) -> None:
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(WAIT_S)
    assert proc.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("labels", [3, 25_000], ids=["small", "spilled-to-wal"])
def test_a_writer_killed_inside_its_transaction_leaves_no_trace(store: Store, settings: Settings, labels: int) -> None:
    # 25,000 long labels overflow the page cache, so uncommitted pages reach the WAL file before the kill.
    kept = store.beads.create("mayor", title="committed before the crash", labels=["keep"])
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=write_and_hang, args=(str(settings.town_dir), "gt-halfmade", labels, child_end))
    proc.start()
    try:
        assert parent_end.poll(WAIT_S), "the writer never reached the middle of its transaction"
        assert parent_end.recv() == "inside"
        if labels > 1_000:
            wal = settings.db_path.with_name(settings.db_path.name + "-wal")
            assert wal.stat().st_size > 1_000_000, "the big transaction did not spill into the WAL"
    finally:
        kill(proc)

    after = reopen(settings.town_dir)
    try:
        assert after.db.query("SELECT id FROM beads WHERE id='gt-halfmade'") == []
        assert after.db.query("SELECT 1 FROM labels WHERE bead_id='gt-halfmade'") == []
        assert after.db.query("SELECT 1 FROM events WHERE actor='crasher'") == []
        assert after.beads.get(kept.id) == kept
        # The dead writer's lock is gone: the next write goes straight through.
        assert after.beads.create("mayor", title="after the crash").status == "open"
    finally:
        after.close()


def test_writers_killed_at_random_points_never_leave_a_half_made_bead(settings: Settings, store: Store) -> None:
    rng = random.Random()
    ctx = mp.get_context("spawn")
    reported: set[str] = set()
    for run in range(4):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=create_forever, args=(str(settings.town_dir), run, child_end))
        proc.start()
        target = rng.randint(20, 300)
        try:
            for _ in range(target):
                assert parent_end.poll(WAIT_S), f"run {run}: the writer stalled"
                reported.add(parent_end.recv())
        finally:
            kill(proc)

        after = reopen(settings.town_dir)
        try:
            beads = {r["id"]: r["title"] for r in after.db.query("SELECT id, title FROM beads")}
            assert reported <= set(beads), "a bead the writer saw committed is gone"
            labels: dict[str, set[str]] = {}
            for r in after.db.query("SELECT bead_id, label FROM labels"):
                labels.setdefault(r["bead_id"], set()).add(r["label"])
            created = {r["bead_id"] for r in after.db.query("SELECT bead_id FROM events WHERE verb='bead.created'")}
            for bead_id, title in beads.items():
                _, n, _, i = title.split()
                assert labels.get(bead_id) == {f"run-{n}", f"n-{i}", "crash"}, bead_id
                assert bead_id in created, bead_id
            assert set(labels) <= set(beads) and created <= set(beads)
            assert len(beads) >= len(reported)
        finally:
            after.close()
