"""Durability of the town database: refusing a lost or damaged file, the journal as a complete write-ahead
log (sequence numbers, after-images, fsync before the reply), roll-forward on open, and backup + restore
that rebuild the lost database row for row (content hash of every table)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from gastown_mcp import assemble
from gastown_mcp.config import TOWN_FILE, Settings, default_town_toml, load_settings
from gastown_mcp.errors import StoreError
from gastown_mcp.models import MessageKind
from gastown_mcp.store import Store
from gastown_mcp.store import backup as bk
from gastown_mcp.store import journal as jr
from gastown_mcp.store.db import WriteLockTaken
from gastown_mcp.town import Town, operator


def existing_town(tmp_path: Path) -> Settings:
    town_dir = tmp_path / "town"
    town_dir.mkdir()
    (town_dir / TOWN_FILE).write_text(default_town_toml("t", "gt"))
    settings = load_settings(town_dir)
    assemble.open_town(settings, new=True).close()
    return settings


def busy(town: Town, n: int = 5) -> list[str]:
    """Writes of every kind the journal must carry: beads with descriptions, labels, deps, comments, mail,
    an agent with credential hashes, a budget, a claim and a completion."""
    op = operator()
    ids = [town.bead_create(op, f"bead {i}", description=f"desc {i}", labels=["x"]).id for i in range(n)]
    town.bead_link(op, ids[1], ids[0], "blocks")
    town.bead_comment(op, ids[0], "a comment")
    if "polecat-1" not in [a.name for a in town.agents(op)]:
        town.agent_add(op, "polecat-1", "polecat")
    town.mail_send(op, "polecat-1", "hi", "hello")
    town.budget_set(op, "town", usd=100.0 + len(ids))
    return ids


def beads_root(path: Path) -> int:
    """The byte offset of the beads table's root page (its first byte is the page type)."""
    conn = sqlite3.connect(path)
    try:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='beads'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return (root - 1) * size


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_a_deleted_database_of_an_existing_town_is_refused_with_the_restore_command(tmp_path: Path) -> None:
    settings = existing_town(tmp_path)
    settings.db_path.unlink()
    with pytest.raises(StoreError, match="gastown restore --town") as err:
        assemble.open_town(settings)
    assert "missing" in str(err.value)
    assert not settings.db_path.exists()  # nothing silently created an empty town


def test_a_zero_length_database_is_refused(tmp_path: Path) -> None:
    settings = existing_town(tmp_path)
    settings.db_path.write_bytes(b"")
    with pytest.raises(StoreError, match=r"empty.*gastown restore"):
        assemble.open_town(settings)


def test_a_byte_flip_in_a_table_page_is_refused_at_open(tmp_path: Path) -> None:
    settings = existing_town(tmp_path)
    town = assemble.open_town(settings)
    busy(town, 200)
    town.close()
    flip_byte(settings.db_path, beads_root(settings.db_path))
    with pytest.raises(StoreError, match="gastown restore"):
        assemble.open_town(settings).close()


def test_export_of_a_damaged_database_is_one_clear_error_not_a_traceback(tmp_path: Path) -> None:
    settings = existing_town(tmp_path)
    town = assemble.open_town(settings)
    busy(town, 200)
    town.close()
    store = Store(settings)  # opened without the check, as a process already running would have it
    flip_byte(settings.db_path, beads_root(settings.db_path))
    store.db.close()
    with pytest.raises(StoreError, match="restore"), open(os.devnull, "w") as out:
        Store(settings).events.export(out)


def test_a_failed_journal_write_leaves_nothing_committed_so_a_retry_cannot_duplicate(settings: Settings) -> None:
    store = Store(settings)
    store.beads.create("mayor", title="before")
    settings.journal_path.unlink()
    settings.journal_path.symlink_to("/dev/full")  # every write to it fails with ENOSPC
    for _ in range(3):
        with pytest.raises(StoreError, match=r"journal write failed.*nothing was changed"):
            store.beads.create("mayor", title="lost")
    assert [r["title"] for r in store.db.query("SELECT title FROM beads")] == ["before"]
    store.close()


def test_an_acknowledged_write_is_on_disk_in_the_journal_before_the_call_returns(settings: Settings) -> None:
    store = Store(settings)
    store.beads.create("mayor", title="durable")
    journal = store.db.journal
    assert journal is not None and journal.fsync
    assert journal._synced == settings.journal_path.stat().st_size
    store.close()


def test_the_journal_carries_every_table_so_it_alone_rebuilds_the_town(settings: Settings) -> None:
    town = assemble.open_town(settings)
    busy(town)
    town.close()
    live = bk.content_hash(settings.db_path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
    report = bk.restore(settings.db_path, settings.journal_path, settings.backups_dir)
    assert report.backup is None and report.replayed > 0
    assert report.content_hash == live


def test_a_database_that_lost_its_last_commits_is_rolled_forward_from_the_journal(settings: Settings) -> None:
    town = assemble.open_town(settings)
    ids = busy(town)
    town.close()
    old = settings.town_dir / "old.db"
    shutil.copyfile(settings.db_path, old)  # the file as an OS crash with synchronous=NORMAL may leave it
    town = assemble.open_town(settings)
    town.bead_update(operator(), ids[2], priority=0)
    town.bead_comment(operator(), ids[2], "after the crash point")
    town.close()
    live = bk.content_hash(settings.db_path)
    os.replace(old, settings.db_path)
    store = Store(settings)
    assert store.db.rolled_forward == 2
    store.close()
    assert bk.content_hash(settings.db_path) == live


def test_journal_lines_from_many_processes_land_in_sequence_order(settings: Settings) -> None:
    Store(settings).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(settings.town_dir), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seqs = [r["seq"] for r in jr.read(settings.journal_path)]
    assert seqs == list(range(1, 4 * 25 + 1))


def _writer(town_dir: str, i: int) -> None:
    store = Store(Settings(town_dir=Path(town_dir)))
    for j in range(25):
        store.messages.send(f"p{i}", "mayor", MessageKind.mail, f"{i}/{j}")
    store.close()


def test_backup_then_restore_equals_the_lost_database_row_for_row(settings: Settings) -> None:
    town = assemble.open_town(settings)
    ids = busy(town)
    info = town.backup_now(operator())
    assert info.verified and info.seq > 0 and info.counts["beads"] == len(ids)
    town.bead_update(operator(), ids[3], priority=0)
    town.bead_comment(operator(), ids[3], "after the backup")
    town.close()
    live = bk.content_hash(settings.db_path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
    report = bk.restore(settings.db_path, settings.journal_path, settings.backups_dir)
    assert report.backup == info.path and report.replayed == 2
    assert report.content_hash == live


def test_restore_of_a_truncated_database_moves_the_damaged_file_aside(settings: Settings) -> None:
    town = assemble.open_town(settings)
    busy(town, 50)
    town.backup_now(operator())
    busy(town, 5)
    town.close()
    live = bk.content_hash(settings.db_path)
    with open(settings.db_path, "r+b") as fh:
        fh.truncate(settings.db_path.stat().st_size // 2)
    report = bk.restore(settings.db_path, settings.journal_path, settings.backups_dir)
    assert report.content_hash == live
    assert any(".damaged-" in p for p in report.moved_aside)


def test_a_journal_with_a_gap_after_the_newest_backup_is_refused(settings: Settings) -> None:
    town = assemble.open_town(settings)
    busy(town)
    town.backup_now(operator())
    town.close()
    lines = settings.journal_path.read_text().splitlines()
    store = Store(settings)
    store.beads.create("mayor", title="x")
    store.beads.create("mayor", title="y")
    store.close()
    all_lines = settings.journal_path.read_text().splitlines()
    settings.journal_path.write_text("\n".join(lines + all_lines[len(lines) + 1 :]) + "\n")  # drop one record
    settings.db_path.unlink()
    with pytest.raises(StoreError, match="jumps from sequence"):
        bk.restore(settings.db_path, settings.journal_path, settings.backups_dir)


def test_a_backup_records_its_sequence_counts_and_hash_and_old_ones_are_pruned(settings: Settings) -> None:
    store = Store(settings)
    for i in range(4):
        store.beads.create("mayor", title=f"b{i}")
        bk.backup(store.db, settings.backups_dir, keep=2)
    kept = bk.list_backups(settings.backups_dir)
    assert [b.seq for b in kept] == [4, 3]
    manifest = json.loads(Path(kept[0].path).with_suffix(".json").read_text())
    assert manifest["counts"]["beads"] == 4 and manifest["content_hash"] == bk.content_hash(Path(kept[0].path))
    store.close()


def test_a_hand_written_town_toml_with_no_trace_of_a_database_gets_a_new_one(tmp_path: Path) -> None:
    town_dir = tmp_path / "town"
    town_dir.mkdir()
    (town_dir / TOWN_FILE).write_text(default_town_toml("t", "gt"))
    assemble.open_town(load_settings(town_dir)).close()
    assert (town_dir / "town.db").exists()


def test_a_deleted_database_with_only_its_journal_left_is_refused(tmp_path: Path) -> None:
    settings = existing_town(tmp_path)
    assert settings.journal_path.stat().st_size > 0  # init writes line 1
    settings.db_path.unlink()
    with pytest.raises(StoreError, match="missing"):
        assemble.open_town(settings)


def test_a_deferred_block_leaves_its_journal_sync_to_whoever_reports_it(settings: Settings) -> None:
    store = Store(settings)
    journal = store.db.journal
    assert journal is not None
    with store.db.deferred() as block:
        store.beads.create("mayor", title="made on an event loop")
    size = settings.journal_path.stat().st_size
    assert block.wrote and block.end == size
    assert journal._synced < size  # committed, not yet on disk in the journal
    store.db.durable(block.end)
    assert journal._synced == size
    store.close()


def test_the_first_write_of_a_deferred_block_does_not_wait_for_a_held_write_lock(settings: Settings) -> None:
    store = Store(settings)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.db.write():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(WriteLockTaken), store.db.deferred() as block:
            store.beads.create("mayor", title="would have waited")
        assert not block.wrote and block.end == 0
    finally:
        release.set()
        holder.join(30)
    assert store.db.query("SELECT title FROM beads") == []
    store.close()
