"""Agents' disk caps: every agent's writable directories sit in a btrfs subvolume of its own, with a qgroup
limit, on one loop-mounted btrfs image per town (`<town>/disks/agents.img`, mounted on `<town>/agents`).

Why this way: the agents' workspaces are host directories (bind mounts), which Docker cannot cap, and this
kernel family is often built without ext4/XFS quota support, while btrfs qgroups are part of btrfs itself. One
mount per town (not one loop device per agent) keeps mounts few and their lifetime the town process's; a
subvolume per agent makes creating, capping and deleting an agent's space one cheap command each. An agent
that reaches its cap gets EDQUOT ("Disk quota exceeded"); the image's own size bounds all agents together, and
the town's database, journal, backups and rigs live outside it, so agents cannot fill them.

Without root, btrfs or loop devices, `mount_agents_disk` says why and the town runs uncapped (the agents'
directories are plain directories); `[runtime] agent_disk_mb = 0` turns the caps off on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from gastown_mcp.errors import GastownError

IMAGE = "agents.img"


class DiskUnavailable(GastownError):
    """The caps cannot be set up here (not root, no btrfs, no loop device): the town runs without them."""


def agents_root(town_dir: Path) -> Path:
    return Path(town_dir).resolve() / "agents"


def image_path(town_dir: Path) -> Path:
    return Path(town_dir).resolve() / "disks" / IMAGE


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


def capped(town_dir: Path) -> bool:
    """Whether the town's agents directory is the capped btrfs image right now."""
    root = agents_root(town_dir)
    return is_mounted(root) and _fs_type(root) == "btrfs"


def mount_agents_disk(town_dir: Path, size_mb: int) -> str:
    """Mount the town's agents image on `<town>/agents` (made on first use, `size_mb` at most; sparse), moving
    in agents' directories that were there before. Idempotent. Returns what it did; raises `DiskUnavailable`."""
    root, image = agents_root(town_dir), image_path(town_dir)
    if capped(town_dir):
        return f"{root} is already the agents' disk"
    missing = [tool for tool in ("mkfs.btrfs", "btrfs", "mount", "umount") if shutil.which(tool) is None]
    if missing:
        raise DiskUnavailable(f"{', '.join(missing)} not found: install btrfs-progs (sudo apt-get install btrfs-progs)")
    if os.geteuid() != 0:
        raise DiskUnavailable("mounting the agents' disk needs root")
    if "btrfs" not in Path("/proc/filesystems").read_text():
        raise DiskUnavailable("this kernel has no btrfs")
    made = not image.exists()
    if made:
        image.parent.mkdir(parents=True, exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        try:
            _run("mkfs.btrfs", "-q", "-f", str(image))
        except DiskUnavailable:
            image.unlink(missing_ok=True)
            raise
    elif image.stat().st_size < size_mb * 1024 * 1024:
        with open(image, "r+b") as f:  # grown on the next mount (btrfs filesystem resize max)
            f.truncate(size_mb * 1024 * 1024)
    root.mkdir(parents=True, exist_ok=True)
    before = [p for p in root.iterdir()]
    if before:
        _move_in(image, root, before)
    _run("mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(root))
    _run("btrfs", "quota", "enable", str(root))
    _run("btrfs", "filesystem", "resize", "max", str(root))
    return f"{'made and ' if made else ''}mounted {image} ({size_mb} MB at most) on {root}"


def unmount_agents_disk(town_dir: Path) -> bool:
    """Unmount the agents' disk (the town is stopping and its containers are gone); False if it was not mounted."""
    root = agents_root(town_dir)
    if not capped(town_dir):
        return False
    if subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
        _run("umount", "--lazy", str(root))  # a straggling container still holds it: detach now, free later
    return True


def agent_dir(town_dir: Path, agent: str, cap_mb: int, *, fresh: bool) -> Path:
    """The agent's own directory (its ~/.claude and repositories go inside): on the capped disk a subvolume
    limited to `cap_mb`, made anew when `fresh`; elsewhere a plain directory."""
    path = agents_root(town_dir) / agent
    if not capped(town_dir):
        if fresh and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path
    if fresh and path.exists():
        remove_agent_dir(town_dir, agent)
    if not path.exists():
        _run("btrfs", "subvolume", "create", str(path))
    _run("btrfs", "qgroup", "limit", f"{cap_mb}M", str(path))
    return path


def remove_agent_dir(town_dir: Path, agent: str) -> None:
    path = agents_root(town_dir) / agent
    if not path.exists():
        return
    if capped(town_dir) and _is_subvolume(path):
        _run("btrfs", "subvolume", "delete", str(path))
    else:
        shutil.rmtree(path, ignore_errors=True)


def usage_mb(town_dir: Path) -> dict[str, tuple[float, float | None]]:
    """Each agent's space on the capped disk: (used MB, cap MB or None). Empty when uncapped."""
    if not capped(town_dir):
        return {}
    root = agents_root(town_dir)
    _run("btrfs", "filesystem", "sync", str(root))  # qgroups count at each commit: commit what was written
    out = _run("btrfs", "qgroup", "show", "-re", "--raw", str(root))
    ids = {}
    for line in _run("btrfs", "subvolume", "list", "-o", str(root)).splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[0] == "ID":
            ids[f"0/{parts[1]}"] = parts[-1].rsplit("/", 1)[-1]
    found: dict[str, tuple[float, float | None]] = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ids and len(parts) >= 4:
            limit = None if parts[3] == "none" else int(parts[3]) / 2**20
            found[ids[parts[0]]] = (int(parts[1]) / 2**20, limit)
    return found


def _move_in(image: Path, root: Path, entries: list[Path]) -> None:
    """Agents' directories from before the disk existed (an upgraded town) go into subvolumes of their own."""
    with tempfile.TemporaryDirectory(dir=image.parent) as staging:
        _run("mount", "-o", "loop", str(image), staging)
        try:
            for entry in entries:
                target = Path(staging) / entry.name
                if entry.is_dir() and not target.exists():
                    _run("btrfs", "subvolume", "create", str(target))
                    _run("cp", "-a", f"{entry}/.", f"{target}/")
                    shutil.rmtree(entry)
        finally:
            _run("umount", staging)


def _is_subvolume(path: Path) -> bool:
    return os.stat(path).st_ino == 256  # btrfs gives every subvolume's root inode 256


def _fs_type(path: Path) -> str:
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1].replace("\\040", " ")
            if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, kind = point, parts[2]
    return kind


def _run(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if done.returncode != 0:
        raise DiskUnavailable(f"`{' '.join(args)}` failed: {done.stderr.strip()[-500:]}")
    return done.stdout
