"""Rigs and per-agent worktrees: clones, branches, and commits made from inside a real container."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gastown_mcp.errors import Conflict, NotFound
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import LaunchSpec
from gastown_mcp.runtime.worktrees import (
    Rig,
    add_rig,
    branch_log,
    create_worktree,
    get_rig,
    list_rigs,
    remove_rig,
    remove_worktree,
)

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]


@pytest.fixture
def source_repo(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    (src / "README.md").write_text("project\n")
    subprocess.run([*GIT, "-C", str(src), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(src), "commit", "-qm", "initial"], check=True)
    return src


@pytest.fixture
def rig(tmp_path: Path, source_repo: Path) -> Rig:
    return add_rig(tmp_path / "town", "proj", str(source_repo))


def test_adding_a_rig_clones_it_into_the_towns_rigs_directory(tmp_path: Path, rig: Rig) -> None:
    assert rig.repo == (tmp_path / "town" / "rigs" / "proj" / "repo").resolve()
    assert branch_log(rig, "main") == ["initial"]
    assert [r.name for r in list_rigs(tmp_path / "town")] == ["proj"]
    assert get_rig(tmp_path / "town", "proj") == rig


def test_adding_a_rig_twice_is_a_conflict(tmp_path: Path, rig: Rig, source_repo: Path) -> None:
    with pytest.raises(Conflict):
        add_rig(tmp_path / "town", "proj", str(source_repo))


def test_a_removed_rig_is_not_found(tmp_path: Path, rig: Rig) -> None:
    remove_rig(tmp_path / "town", "proj")
    with pytest.raises(NotFound, match="rig add"):
        get_rig(tmp_path / "town", "proj")


def test_a_worktree_is_on_the_agents_own_branch(rig: Rig) -> None:
    worktree = create_worktree(rig, "nux", "gt-4f2a")
    assert worktree.branch == "polecat/nux/gt-4f2a"
    head = (worktree.git_dir / "HEAD").read_text().strip()
    assert head == "ref: refs/heads/polecat/nux/gt-4f2a"
    assert (worktree.path / "README.md").read_text() == "project\n"


def test_removing_a_worktree_keeps_its_branch_and_a_respawn_reuses_it(rig: Rig) -> None:
    worktree = create_worktree(rig, "nux", "gt-4f2a")
    remove_worktree(rig, "nux")
    assert not worktree.path.exists()
    assert branch_log(rig, "polecat/nux/gt-4f2a") == ["initial"]
    again = create_worktree(rig, "nux", "gt-4f2a")
    assert again.branch == worktree.branch


SCRIPT = """
cd /work && echo work > hello.txt && git add hello.txt && git commit -qm 'polecat work'
echo commit=$?
echo evil > {git}/hooks/pre-commit 2>/dev/null; echo hook=$?
git config --local core.hooksPath /tmp 2>/dev/null; echo config=$?
echo 'gitdir: /tmp' > /work/.git 2>/dev/null; echo pointer=$?
git update-ref refs/heads/main HEAD 2>/dev/null; echo main=$?
echo /tmp > {git}/objects/info/alternates 2>/dev/null; echo alternates=$?
"""


@pytest.mark.docker
def test_a_container_commits_in_its_worktree_onto_the_agents_branch_and_nothing_else(
    runtime: DockerRuntime, agent_image: str, town_name: str, rig: Rig
) -> None:
    worktree = create_worktree(rig, "nux", "gt-4f2a")
    script = SCRIPT.format(git=rig.git_dir)
    runtime.launch(
        LaunchSpec(
            town=town_name,
            agent="nux",
            role="polecat",
            image=agent_image,
            command=["sh", "-c", script],
            mounts=worktree.mounts(),
        )
    )
    status = runtime.wait(town_name, "nux", timeout_s=30)
    output = runtime.logs(town_name, "nux")
    assert status.reason == "ok", output
    results = dict(line.split("=", 1) for line in output.split() if "=" in line)
    assert results == {"commit": "0", "hook": "2", "config": "255", "pointer": "2", "main": "128", "alternates": "2"}
    assert branch_log(rig, "polecat/nux/gt-4f2a") == ["polecat work", "initial"]
    assert branch_log(rig, "main") == ["initial"]
    assert not (rig.git_dir / "hooks" / "pre-commit").exists()
    remove_worktree(rig, "nux")
    assert branch_log(rig, "polecat/nux/gt-4f2a") == ["polecat work", "initial"]
