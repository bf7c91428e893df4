"""Rigs (the town's own clone of a project) and per-agent git worktrees on `polecat/<agent>/<bead>` branches.

A rig lives in `<town>/rigs/<name>/repo`; an agent's worktree in `<town>/rigs/<name>/worktrees/<agent>`.
The container sees the worktree at /work and the rig's `.git` at its host path (the worktree's `.git` file
points there), read-only except for what a commit on its own branch needs: the object store, its
worktree's private git dir, and its own `refs/heads/polecat/<agent>/` namespace. Hooks, config and the
`.git` pointer file stay read-only. The host never runs git inside a worktree (its contents are the agent's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gastown_mcp.errors import Conflict, Forbidden, GastownError, InvalidInput, NotFound
from gastown_mcp.runtime.protocol import AGENT_GID, AGENT_UID, WORK_DIR, Mount

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
NO_BEAD = "hook"


@dataclass(frozen=True)
class Rig:
    name: str
    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def git_dir(self) -> Path:
        return self.repo / ".git"


@dataclass(frozen=True)
class Worktree:
    rig: Rig
    agent: str
    branch: str
    path: Path
    git_dir: Path

    def mounts(self) -> list[Mount]:
        """The binds that let the container commit on its branch and change nothing else in the rig."""
        common = self.rig.git_dir
        namespace = f"polecat/{self.agent}"
        return [
            Mount(self.path, WORK_DIR, read_only=False),
            Mount(self.path / ".git", f"{WORK_DIR}/.git", read_only=True),
            Mount(common, read_only=True),
            Mount(common / "objects", read_only=False),
            # objects/info/alternates would let an agent point the rig at object stores of its choosing.
            Mount(common / "objects" / "info", read_only=True),
            Mount(self.git_dir, read_only=False),
            Mount(common / "refs" / "heads" / namespace, read_only=False),
            Mount(common / "logs" / "refs" / "heads" / namespace, read_only=False),
        ]


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GastownError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.match(value) or ".." in value:
        raise InvalidInput(f"{kind} {value!r} must be letters, digits, '-', '_' or '.' (at most 63)")


def _share_with_agents(git_dir: Path) -> None:
    """Let the agent group (gid 1000) add objects; git keeps new object dirs group-writable from now on."""
    _git("config", "core.sharedRepository", "group", cwd=git_dir)
    # An agent must not trigger gc or maintenance: they rewrite packed-refs and packs shared by everyone.
    _git("config", "gc.auto", "0", cwd=git_dir)
    _git("config", "maintenance.auto", "false", cwd=git_dir)
    objects = git_dir / "objects"
    (objects / "info").mkdir(exist_ok=True)
    for dirpath, _dirnames, _files in os.walk(objects):
        os.chown(dirpath, -1, AGENT_GID)
        os.chmod(dirpath, 0o2775)


def _chown_tree(path: Path) -> None:
    try:
        os.chown(path, AGENT_UID, AGENT_GID)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), AGENT_UID, AGENT_GID, follow_symlinks=False)
    except PermissionError as exc:
        raise Forbidden(
            f"cannot hand {path} to the agent user (uid {AGENT_UID}): run the town as root or as uid {AGENT_UID}"
        ) from exc


def rig_path(town_dir: Path, name: str) -> Path:
    return Path(town_dir).resolve() / "rigs" / name


def add_rig(town_dir: Path, name: str, path_or_url: str) -> Rig:
    """Clone `path_or_url` into the town's `rigs/<name>/repo`; refuse if the rig exists."""
    _check_name("rig name", name)
    rig = Rig(name, rig_path(town_dir, name))
    if rig.root.exists():
        raise Conflict(f"rig {name} already exists at {rig.root}; remove it first or pick another name")
    rig.root.mkdir(parents=True)
    source = path_or_url
    if Path(path_or_url).exists():
        source = str(Path(path_or_url).resolve())
    try:
        # --no-local copies through the git protocol: no hardlinks into the source, no trust in its files.
        _git("clone", "--quiet", "--no-local", source, str(rig.repo))
    except GastownError:
        shutil.rmtree(rig.root, ignore_errors=True)
        raise
    _share_with_agents(rig.git_dir)
    (rig.root / "worktrees").mkdir()
    return rig


def get_rig(town_dir: Path, name: str) -> Rig:
    rig = Rig(name, rig_path(town_dir, name))
    if not rig.git_dir.is_dir():
        raise NotFound(f"rig {name} does not exist; add it with `gastown rig add {name} PATH_OR_URL`")
    return rig


def list_rigs(town_dir: Path) -> list[Rig]:
    rigs = Path(town_dir).resolve() / "rigs"
    if not rigs.is_dir():
        return []
    return [Rig(p.name, p) for p in sorted(rigs.iterdir()) if (p / "repo" / ".git").is_dir()]


def remove_rig(town_dir: Path, name: str) -> None:
    """Delete the rig's clone and worktrees (branches go with it: push or fetch them first)."""
    rig = get_rig(town_dir, name)
    shutil.rmtree(rig.root)


def branch_name(agent: str, bead: str | None) -> str:
    return f"polecat/{agent}/{bead or NO_BEAD}"


def create_worktree(rig: Rig, agent: str, bead: str | None = None, base: str = "HEAD") -> Worktree:
    """A worktree for `agent` on `polecat/<agent>/<bead>` (reusing the branch if it exists), owned by the agent."""
    _check_name("agent name", agent)
    if bead is not None:
        _check_name("bead id", bead)
    branch = branch_name(agent, bead)
    path = rig.root / "worktrees" / agent
    if path.exists():
        raise Conflict(f"agent {agent} already has a worktree in rig {rig.name}; remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = subprocess.run(
        ["git", "show-ref", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=rig.repo, check=False
    )
    if exists.returncode == 0:
        _git("worktree", "add", "--quiet", str(path), branch, cwd=rig.repo)
    else:
        _git("worktree", "add", "--quiet", "-b", branch, str(path), base, cwd=rig.repo)
    pointer = (path / ".git").read_text().strip()
    if not pointer.startswith("gitdir: "):
        raise GastownError(f"unexpected .git file in {path}: {pointer!r}")
    git_dir = Path(pointer.removeprefix("gitdir: "))
    namespace = f"polecat/{agent}"
    for ref_dir in (rig.git_dir / "refs" / "heads" / namespace, rig.git_dir / "logs" / "refs" / "heads" / namespace):
        ref_dir.mkdir(parents=True, exist_ok=True)
        _chown_tree(ref_dir)
    _chown_tree(git_dir)
    _chown_tree(path)
    # The pointer file is bound read-only into the container; root owns it so the agent cannot swap it.
    os.chown(path / ".git", 0, 0)
    return Worktree(rig, agent, branch, path, git_dir)


def remove_worktree(rig: Rig, agent: str) -> None:
    """Delete the agent's worktree directory and git's record of it; its branch and commits stay in the rig."""
    path = rig.root / "worktrees" / agent
    if path.exists():
        shutil.rmtree(path)
    _git("worktree", "prune", cwd=rig.repo)


def branch_log(rig: Rig, branch: str, limit: int = 20) -> list[str]:
    """Subjects of the newest commits on `branch` in the rig clone (what an agent has landed)."""
    out = _git("log", f"--max-count={limit}", "--format=%s", f"refs/heads/{branch}", "--", cwd=rig.repo)
    return out.splitlines()
