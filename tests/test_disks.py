"""Agents' disk caps on a real loop-mounted btrfs image: an agent that writes past its cap gets "Disk quota
exceeded", other agents and the town's own files are untouched, and the disk comes and goes with the town."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown_mcp import disks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a loop device needs root")

UID = 61000


def write_as_agent(path: Path, mb: int) -> subprocess.CompletedProcess[str]:
    """dd as the agent user (what a container's process is to the host's filesystem)."""
    command = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
    command += ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mb}", "conv=fsync"]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.fixture
def town() -> Iterator[Path]:
    """A town directory the agent user can walk into (pytest's own tmp directories are root's alone)."""
    town_dir = Path(tempfile.mkdtemp(prefix="gastown-disks-"))
    town_dir.chmod(0o755)
    try:
        yield town_dir
    finally:
        disks.unmount_agents_disk(town_dir)
        shutil.rmtree(town_dir)


def test_an_agent_past_its_cap_gets_disk_quota_exceeded_and_nothing_else_is_touched(town: Path) -> None:
    said = disks.mount_agents_disk(town, 512)
    assert "made and mounted" in said and disks.capped(town)
    nux = disks.agent_dir(town, "nux", 24, fresh=True)
    slit = disks.agent_dir(town, "slit", 24, fresh=True)
    for path in (nux, slit):
        os.chown(path, UID, UID)
    done = write_as_agent(nux / "fill", 64)
    assert done.returncode != 0 and os.strerror(errno.EDQUOT) in done.stderr, done.stderr
    assert write_as_agent(slit / "small", 4).returncode == 0  # another agent still has its own room
    used = disks.usage_mb(town)
    assert used["nux"][1] == used["slit"][1] == 24
    assert 20 <= used["nux"][0] <= 24.5 and 4 <= used["slit"][0] < 6
    (town / "town.db").write_bytes(b"x" * 2**20)  # the town's own files are on the host's disk, not the image
    assert not disks.capped(town / "town.db") and shutil.disk_usage(town).free > 2**20

    # A fresh launch under a reused name starts empty; the next start finds the disk (and slit's work) again.
    nux = disks.agent_dir(town, "nux", 24, fresh=True)
    assert list(nux.iterdir()) == [] and disks.usage_mb(town)["nux"][0] < 1
    assert disks.unmount_agents_disk(town) and not disks.capped(town)
    assert not (town / "agents" / "slit" / "small").exists()
    assert disks.mount_agents_disk(town, 512).startswith("mounted")
    assert (town / "agents" / "slit" / "small").stat().st_size == 4 * 2**20
    disks.remove_agent_dir(town, "slit")
    assert "slit" not in disks.usage_mb(town) and not (town / "agents" / "slit").exists()


def test_agents_directories_from_before_the_disk_move_onto_it_with_their_files(town: Path) -> None:
    old = town / "agents" / "rust" / "claude"
    old.mkdir(parents=True)
    (old / "session.jsonl").write_text("{}\n")
    os.chown(old / "session.jsonl", UID, UID)
    disks.mount_agents_disk(town, 256)
    moved = town / "agents" / "rust" / "claude" / "session.jsonl"
    assert moved.read_text() == "{}\n" and moved.stat().st_uid == UID
    assert disks.agent_dir(town, "rust", 8, fresh=False) == town / "agents" / "rust"
    assert disks.usage_mb(town)["rust"][1] == 8


def test_without_the_tools_or_with_caps_off_the_town_says_its_agents_are_uncapped(
    town: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(disks.DiskUnavailable, match="install btrfs-progs"):
        disks.mount_agents_disk(town, 256)
    assert disks.agent_dir(town, "nux", 8, fresh=True).is_dir() and disks.usage_mb(town) == {}
