"""Rigs and agent repositories: the town's clone of a project, one private repository per agent, the checked
hand-in of finished work, and the git steps that land it on `main` (rebase, compare-and-swap).

A rig is `<town>/rigs/<name>/repo`, written only by the town. An agent's repository is
`<town>/rigs/<name>/agents/<agent>`: a clone that borrows the rig's objects through `alternates` (the rig's
object store is mounted read-only at the same path in the container), so nothing is copied and the agent can
write only its own objects and refs. After creating it the town never runs git inside it: work comes in with
the pack protocol (fetch with fsck) from a git directory of the town's own that only points at the agent's
objects and names the one commit it read from the agent's branch.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gastown_mcp.errors import Conflict, Forbidden, GastownError, InvalidInput, NotFound
from gastown_mcp.runtime.protocol import AGENT_GID, AGENT_UID, WORK_DIR, Mount

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
NO_BEAD = "hook"
MAIN = "main"
# Git as the town runs it: no system or user config, no prompts, an identity for the commits it writes.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "gastown refinery",
    "GIT_AUTHOR_EMAIL": "refinery@gastown.invalid",
    "GIT_COMMITTER_NAME": "gastown refinery",
    "GIT_COMMITTER_EMAIL": "refinery@gastown.invalid",
}


class HandInRefused(InvalidInput):
    """The agent's branch cannot be taken in (no new commit, or objects that fail the check)."""


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

    @property
    def objects(self) -> Path:
        return self.git_dir / "objects"


@dataclass(frozen=True)
class AgentRepo:
    """An agent's private repository, checked out on its branch; the container sees it at /work."""

    rig: Rig
    agent: str
    branch: str
    path: Path

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    def mounts(self) -> list[Mount]:
        """Its own repository writable; the `alternates` pointer and the rig's objects read-only."""
        return [
            Mount(self.path, WORK_DIR, read_only=False),
            # alternates names the rig's object store; the agent must not point it anywhere else.
            Mount(self.git_dir / "objects" / "info", f"{WORK_DIR}/.git/objects/info", read_only=True),
            Mount(self.rig.objects, read_only=True),
        ]


@dataclass(frozen=True)
class HandIn:
    """A branch the town took in: the checked commit, the rig ref that holds it, and where it forked from main."""

    commit: str
    ref: str
    base: str


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """git as the town runs it (GIT_ENV), its output captured; the caller reads the exit code."""
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, env={**os.environ, **GIT_ENV}
    )


def _git(*args: str, cwd: Path, check: bool = True) -> str:
    done = _run(*args, cwd=cwd)
    if check and done.returncode != 0:
        raise GastownError(f"`git {' '.join(args)}` failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _ok(*args: str, cwd: Path) -> bool:
    return _run(*args, cwd=cwd).returncode == 0


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.match(value) or ".." in value:
        raise InvalidInput(f"{kind} {value!r} must be letters, digits, '-', '_' or '.' (at most 63)")


def chown_tree(path: Path, owner: tuple[int, int] = (AGENT_UID, AGENT_GID)) -> None:
    uid, gid = owner
    try:
        os.chown(path, uid, gid)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
    except PermissionError as exc:
        raise Forbidden(
            f"cannot hand {path} to the agent user (uid {uid}): run the town as root or as uid {uid}"
        ) from exc


def _seal(git_dir: Path) -> None:
    """The rig is the town's alone: readable by agents (through a read-only mount), writable by nobody else.

    Rigs made by older towns were group-writable for agents; this takes that back."""
    _git("config", "core.sharedRepository", "0644", cwd=git_dir)
    # Repacking would delete packs that running agents are reading through their alternates.
    _git("config", "gc.auto", "0", cwd=git_dir)
    _git("config", "maintenance.auto", "false", cwd=git_dir)
    for dirpath, _dirnames, filenames in os.walk(git_dir / "objects"):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)


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
        _git("clone", "--quiet", "--no-local", source, str(rig.repo), cwd=rig.root)
        if not _ok("rev-parse", "--verify", "--quiet", f"refs/heads/{MAIN}", cwd=rig.repo):
            raise InvalidInput(f"{path_or_url} has no `{MAIN}` branch; the town lands work on `{MAIN}`")
    except GastownError:
        shutil.rmtree(rig.root, ignore_errors=True)
        raise
    _seal(rig.git_dir)
    return rig


def get_rig(town_dir: Path, name: str) -> Rig:
    rig = Rig(name, rig_path(town_dir, name))
    if not rig.git_dir.is_dir():
        raise NotFound(f"rig {name} does not exist; add it with `gastown rig add {name} PATH_OR_URL`")
    if os.stat(rig.objects).st_mode & stat.S_IWGRP:
        _seal(rig.git_dir)  # a rig from before agents had repositories of their own
    return rig


def list_rigs(town_dir: Path) -> list[Rig]:
    rigs = Path(town_dir).resolve() / "rigs"
    if not rigs.is_dir():
        return []
    return [Rig(p.name, p) for p in sorted(rigs.iterdir()) if (p / "repo" / ".git").is_dir()]


def remove_rig(town_dir: Path, name: str) -> None:
    """Delete the rig's clone and the agents' repositories (push or land what you need first)."""
    rig = get_rig(town_dir, name)
    for agent in agent_repos(rig):
        remove_agent_repo(rig, agent)
    shutil.rmtree(rig.root)


def branch_name(agent: str, bead: str | None) -> str:
    return f"polecat/{agent}/{bead or NO_BEAD}"


def handin_ref(agent: str, bead: str | None) -> str:
    """Where the town keeps an agent's handed-in branch in the rig (outside refs/heads: only the town writes)."""
    return f"refs/polecat/{agent}/{bead or NO_BEAD}"


def agent_repo_path(rig: Rig, agent: str) -> Path:
    """`<town>/agents/<agent>/rigs/<rig>`: inside the agent's own (capped) directory, beside its ~/.claude. A
    repository made before that layout (`<rig>/agents/<agent>`) is still found there."""
    old = rig.root / "agents" / agent
    if old.is_dir():
        return old
    return rig.root.parent.parent / "agents" / agent / "rigs" / rig.name


def create_agent_repo(
    rig: Rig,
    agent: str,
    bead: str | None = None,
    start: str | None = None,
    owner: tuple[int, int] = (AGENT_UID, AGENT_GID),
) -> AgentRepo:
    """A private repository for `agent` on `polecat/<agent>/<bead>`, starting at `start` (a commit the rig
    holds: an earlier hand-in of the same bead) or at `main`; its own `main` branch marks the rig's main.
    Its files belong to `owner` (the agent user's uid and gid)."""
    _check_name("agent name", agent)
    if bead is not None:
        _check_name("bead id", bead)
    branch = branch_name(agent, bead)
    path = agent_repo_path(rig, agent)
    if path.exists():
        raise Conflict(f"agent {agent} already has a repository in rig {rig.name}; remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    # --shared: the new repository's objects/info/alternates names the rig's object store; nothing is copied.
    _git("clone", "--quiet", "--shared", "--no-checkout", str(rig.repo), str(path), cwd=rig.root)
    try:
        origin = start or _git("rev-parse", f"refs/heads/{MAIN}", cwd=rig.repo).strip()
        _git("checkout", "--quiet", "-B", branch, origin, cwd=path)
        _git("remote", "remove", "origin", cwd=path)
        _hand_over(path, owner)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return AgentRepo(rig, agent, branch, path)


def _hand_over(path: Path, owner: tuple[int, int]) -> None:
    """The repository's files to `owner`, except the pointer to the rig's objects, which stays the town's."""
    chown_tree(path, owner)
    info = path / ".git" / "objects" / "info"
    os.chown(info, 0, 0)
    os.chown(info / "alternates", 0, 0)
    os.chmod(info, 0o755)
    os.chmod(info / "alternates", 0o644)


def open_agent_repo(rig: Rig, agent: str, branch: str, owner: tuple[int, int] | None = None) -> AgentRepo:
    """An agent's repository made earlier (to resume its session in a new container). With `owner`, files that
    belong to anyone else (a town upgraded from other agent ids) are handed to it first."""
    path = agent_repo_path(rig, agent)
    if not (path / ".git").is_dir():
        raise NotFound(f"agent {agent} has no repository in rig {rig.name}; spawn a new agent instead")
    if owner is not None and not owned_by(path, owner, skip=path / ".git" / "objects" / "info"):
        _hand_over(path, owner)
    return AgentRepo(rig, agent, branch, path)


def owned_by(path: Path, owner: tuple[int, int], skip: Path | None = None) -> bool:
    """Whether everything under `path` (but `skip`) belongs to `owner`; symlinks are not followed."""
    for dirpath, dirnames, filenames in os.walk(path):
        if skip is not None and Path(dirpath) == skip:
            dirnames.clear()
            continue
        for name in [".", *dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_uid, st.st_gid) != owner:
                return False
    return True


def agent_repos(rig: Rig) -> list[str]:
    """The agents that have a repository in this rig."""
    old, agents = rig.root / "agents", rig.root.parent.parent / "agents"
    found = {p.name for p in old.iterdir() if p.is_dir()} if old.is_dir() else set()
    if agents.is_dir():
        found |= {p.name for p in agents.iterdir() if (p / "rigs" / rig.name).is_dir()}
    return sorted(found)


def handin_refs(rig: Rig) -> list[tuple[str, str, str]]:
    """Every handed-in branch the rig keeps, as (ref, agent, bead)."""
    out = _git("for-each-ref", "--format=%(refname)", "refs/polecat/", cwd=rig.repo)
    found = []
    for ref in out.split():
        parts = ref.split("/")
        if len(parts) == 4:
            found.append((ref, parts[2], parts[3]))
    return found


def delete_handin_ref(rig: Rig, ref: str) -> None:
    if not ref.startswith("refs/polecat/"):
        raise InvalidInput(f"{ref} is not a handed-in branch (refs/polecat/...)")
    _git("update-ref", "-d", ref, cwd=rig.repo)


def remove_agent_repo(rig: Rig, agent: str) -> None:
    """Delete the agent's repository; what it handed in stays in the rig."""
    shutil.rmtree(agent_repo_path(rig, agent), ignore_errors=True)


def _read_ref(git_dir: Path, ref: str) -> str | None:
    """The commit an agent's ref names, read as plain text (loose file, else packed-refs); None if absent.

    Nothing the agent wrote is run or followed: symlinks are refused and only a 40-hex id is accepted."""

    def read(path: Path) -> str | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read(4096).decode("ascii", "replace")

    loose = read(git_dir / ref)
    if loose is not None:
        value = loose.strip()
        return value if _SHA_RE.match(value) else None
    for line in (read(git_dir / "packed-refs") or "").splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref and _SHA_RE.match(sha):
            return sha
    return None


@contextlib.contextmanager
def _pointer_repo(rig: Rig, objects: Path, commit: str) -> Iterator[Path]:
    """A bare repository of the town's own whose one branch names `commit` and whose objects are the agent's
    (by alternates): upload-pack runs here with the town's config, never in the agent's repository."""
    path = rig.root / "handin" / secrets.token_hex(6)
    path.parent.mkdir(exist_ok=True)
    try:
        _git("init", "--quiet", "--bare", str(path), cwd=rig.root)
        (path / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        (path / "refs" / "heads" / "handin").write_text(f"{commit}\n")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def hand_in(repo: AgentRepo, bead: str | None) -> HandIn:
    """Take the agent's branch into the rig at `refs/polecat/<agent>/<bead>`, checking every new object.

    Refused (and nothing changes) when the branch is missing, has no commit beyond main, or holds an
    object that fails git's fsck."""
    rig = repo.rig
    commit = _read_ref(repo.git_dir, f"refs/heads/{repo.branch}")
    if commit is None:
        raise HandInRefused(f"branch {repo.branch} has no commit the town can read; commit your work on it")
    ref = handin_ref(repo.agent, bead)
    with _pointer_repo(rig, repo.git_dir / "objects", commit) as pointer:
        done = _run(
            "-c", "fetch.fsckObjects=true",
            "-c", "transfer.fsckObjects=true",
            "-c", "protocol.file.allow=always",
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
            f"file://{pointer}", f"+refs/heads/handin:{ref}",
            cwd=rig.repo,
        )  # fmt: skip
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-3:]
        raise HandInRefused(f"the town refused the objects on {repo.branch}: {' / '.join(why)}; nothing landed")
    main = main_commit(rig)
    if _ok("merge-base", "--is-ancestor", commit, main, cwd=rig.repo):
        _git("update-ref", "-d", ref, cwd=rig.repo)
        raise HandInRefused(f"{repo.branch} has no commit beyond main; commit your work before completing")
    base = _git("merge-base", commit, main, cwd=rig.repo).strip()
    return HandIn(commit=commit, ref=ref, base=base)


# -- landing (the merge queue's git steps) -------------------------------------------------------------
def main_commit(rig: Rig) -> str:
    return _git("rev-parse", f"refs/heads/{MAIN}", cwd=rig.repo).strip()


def is_on_main(rig: Rig, commit: str) -> bool:
    return _ok("merge-base", "--is-ancestor", commit, f"refs/heads/{MAIN}", cwd=rig.repo)


@dataclass
class Candidate:
    """`main` plus some handed-in branches, rebased in order in the town's scratch tree (checked out at `path`)."""

    path: Path
    base: str
    commit: str
    applied: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)


def scratch_path(rig: Rig) -> Path:
    return rig.root / "scratch"


def build_candidate(rig: Rig, base: str, tips: Sequence[tuple[str, str]], mode: str = "rebase") -> Candidate:
    """Apply each `(key, commit)` onto `base` in the scratch tree, skipping (and naming) any that conflict."""
    path = scratch_path(rig)
    if not (path / ".git").exists():
        shutil.rmtree(path, ignore_errors=True)
        _git("worktree", "prune", cwd=rig.repo)
        _git("worktree", "add", "--quiet", "--detach", str(path), base, cwd=rig.repo)
    _git("reset", "--quiet", "--hard", cwd=path)
    _git("clean", "-qfdx", cwd=path)
    _git("checkout", "--quiet", "--detach", base, cwd=path)
    candidate = Candidate(path=path, base=base, commit=base)
    for key, tip in tips:
        head = candidate.commit
        if mode == "merge":
            ok = _ok("merge", "--quiet", "--no-ff", "--no-edit", "-m", f"Merge {key}", tip, cwd=path)
            abort = ("merge", "--abort")
        else:
            fork = _git("merge-base", head, tip, cwd=path).strip()
            ok = _ok("rebase", "--quiet", "--onto", head, fork, tip, cwd=path)
            abort = ("rebase", "--abort")
        if ok:
            candidate.commit = _git("rev-parse", "HEAD", cwd=path).strip()
            candidate.applied.append(key)
            continue
        files = _git("diff", "--name-only", "--diff-filter=U", cwd=path).split()
        _git(*abort, cwd=path, check=False)
        _git("checkout", "--quiet", "--detach", head, cwd=path)
        candidate.conflicts[key] = files or ["(no single file: the change does not apply)"]
    _git("checkout", "--quiet", "--detach", candidate.commit, cwd=path)
    return candidate


def move_main(rig: Rig, new: str, old: str) -> bool:
    """Compare-and-swap `main` from `old` to `new`; False (and nothing changed) when main is no longer `old`."""
    return _ok("update-ref", "-m", "gastown: land", f"refs/heads/{MAIN}", new, old, cwd=rig.repo)


def log(rig: Rig, ref: str, limit: int = 20) -> list[str]:
    """Subjects of the newest commits on `ref` (a branch name or a full ref) in the rig."""
    target = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
    out = _git("log", f"--max-count={limit}", "--format=%s", target, "--", cwd=rig.repo)
    return out.splitlines()


def changed_files(rig: Rig, commit: str, base: str) -> list[str]:
    return _git("diff", "--name-only", base, commit, cwd=rig.repo).split()


def diff(rig: Rig, base: str, commit: str, max_chars: int = 60_000) -> str:
    """The change from `base` to `commit` as a unified diff, cut at `max_chars` (what a reviewer reads)."""
    text = _git("diff", "--no-color", "--no-ext-diff", base, commit, cwd=rig.repo)
    return text if len(text) <= max_chars else text[:max_chars] + "\n[diff cut]\n"


def push_main(rig: Rig, remote: str, new: str) -> str | None:
    """Push `new` to `remote`'s main as a plain fast-forward (never forced); None when it went through, else
    the remote's reason. A remote whose main moved refuses it, and nothing there changes."""
    done = _run("push", "--porcelain", "--quiet", remote, f"{new}:refs/heads/{MAIN}", cwd=rig.repo)
    if done.returncode == 0:
        return None
    return (done.stderr.strip() or done.stdout.strip()).splitlines()[-1][:500]


def follow_remote_main(rig: Rig, remote: str) -> str | None:
    """Move the rig's main forward to `remote`'s main when someone else pushed there (fast-forward only, by
    compare-and-swap); returns the new main, or None when the two have diverged and a person must decide."""
    if not _ok("fetch", "--quiet", "--no-tags", remote, f"refs/heads/{MAIN}", cwd=rig.repo):
        return None
    theirs = _git("rev-parse", "FETCH_HEAD", cwd=rig.repo).strip()
    ours = main_commit(rig)
    if theirs == ours:
        return ours
    if not _ok("merge-base", "--is-ancestor", ours, theirs, cwd=rig.repo):
        return None  # diverged: not for the town to pick a side
    return theirs if move_main(rig, theirs, ours) else None
