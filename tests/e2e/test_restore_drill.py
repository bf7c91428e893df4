"""The restore drill: a town process doing real work (claims, completions, comments, mail) through the real
write path is killed with SIGKILL mid-work; its database is then deleted, byte-flipped or truncated;
`gastown restore` rebuilds it; every write acknowledged before the kill is there; the town then finishes the
remaining beads. Acknowledged = the call returned and the worker reported it (a line on its stdout)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gastown_mcp import assemble
from gastown_mcp.config import load_settings
from gastown_mcp.errors import StoreError
from gastown_mcp.models import BeadStatus
from gastown_mcp.town import operator

pytestmark = pytest.mark.slow

GASTOWN = [str(Path(sys.executable).parent / "gastown")]

WORKER = r"""
import sys
from gastown_mcp import assemble
from gastown_mcp.config import load_settings
from gastown_mcp.town import operator
town = assemble.open_town(load_settings(sys.argv[1]))
op = operator()
i = 0
while True:
    b = town.bead_create(op, f"bead {i}", description=f"description {i}", labels=["drill"])
    print(json.dumps({"create": b.id, "title": b.title}), flush=True)
    if i % 3 == 0:
        town.bead_comment(op, b.id, f"comment {i}")
        print(json.dumps({"comment": b.id}), flush=True)
    if i % 2 == 0:
        town.bead_claim(op, b.id)
        town.bead_complete(op, b.id, f"done {i}")
        print(json.dumps({"done": b.id}), flush=True)
    if i == 40:
        town.backup_now(op)
        print(json.dumps({"backup": i}), flush=True)
    i += 1
""".replace("import sys", "import json, sys", 1)


def gastown(town_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GASTOWN, *args, "--town", str(town_dir)], capture_output=True, text=True, timeout=120)


def run_and_kill(town_dir: Path) -> list[dict[str, object]]:
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(town_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(json.loads(line))
        if len([a for a in acked if "create" in a]) >= 120:
            os.kill(proc.pid, signal.SIGKILL)  # mid-work: the next write may be anywhere in its transaction
            break
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.fixture
def town_dir(tmp_path: Path) -> Path:
    path = tmp_path / "town"
    done = subprocess.run([*GASTOWN, "init", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return path


def damage(db: Path, how: str) -> None:
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # put the committed pages in the main file first
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='beads'").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    if how == "flipped":
        with open(db, "r+b") as fh:
            fh.seek((root - 1) * size)
            b = fh.read(1)
            fh.seek((root - 1) * size)
            fh.write(bytes([b[0] ^ 0xFF]))
    else:
        with open(db, "r+b") as fh:
            fh.truncate(db.stat().st_size // 3)


@pytest.mark.parametrize("how", ["deleted", "flipped", "truncated"])
def test_restore_after_sigkill_keeps_every_acknowledged_write_and_the_town_finishes(town_dir: Path, how: str) -> None:
    acked = run_and_kill(town_dir)
    assert any("backup" in a for a in acked)
    damage(town_dir / "town.db", how)
    refused = gastown(town_dir, "status")
    assert refused.returncode != 0 and f"gastown restore --town {town_dir}" in " ".join(refused.stderr.split())

    began = time.monotonic()
    done = gastown(town_dir, "restore", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backup"] is not None and report["replayed"] > 0
    assert time.monotonic() - began < 60

    settings = load_settings(town_dir)
    town = assemble.open_town(settings)
    op = operator()
    try:
        beads = {b.id: b for b in town.bead_list(op, limit=500)}
        for a in acked:
            if "create" in a:
                assert beads[str(a["create"])].title == a["title"]
            if "done" in a:
                assert beads[str(a["done"])].status is BeadStatus.done
            if "comment" in a:
                assert town.bead_show(op, str(a["comment"])).comments
        # The town comes up and finishes what is left.
        for b in list(beads.values()):
            if b.status is BeadStatus.open:
                town.bead_claim(op, b.id)
                town.bead_complete(op, b.id, "after the restore")
            elif b.status is BeadStatus.in_progress:
                town.bead_complete(op, b.id, "after the restore")
        left = [b for b in town.bead_list(op, limit=500) if b.status is not BeadStatus.done]
        assert left == []
    finally:
        town.close()


def test_the_refusal_holds_until_restore_runs(town_dir: Path) -> None:
    (town_dir / "town.db").unlink()
    with pytest.raises(StoreError, match="missing"):
        assemble.open_town(load_settings(town_dir))
