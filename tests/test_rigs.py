"""Rigs, agents' own repositories and the hand-in: real git, and real containers for what an agent can touch."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gastown_mcp import rigs
from gastown_mcp.errors import Conflict, NotFound
from gastown_mcp.rigs import AgentRepo, HandInRefused, Rig
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import LaunchSpec

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "safe.directory=*"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    """What a polecat does in its repository (here from the host, as the test plays the agent)."""
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def source_repo(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    (src / "README.md").write_text("project\n")
    git(src, "add", ".")
    git(src, "commit", "-qm", "initial")
    return src


@pytest.fixture
def rig(tmp_path: Path, source_repo: Path) -> Rig:
    return rigs.add_rig(tmp_path / "town", "proj", str(source_repo))


def test_adding_a_rig_clones_it_into_the_towns_rigs_directory(tmp_path: Path, rig: Rig) -> None:
    assert rig.repo == (tmp_path / "town" / "rigs" / "proj" / "repo").resolve()
    assert rigs.log(rig, "main") == ["initial"]
    assert [r.name for r in rigs.list_rigs(tmp_path / "town")] == ["proj"]
    assert rigs.get_rig(tmp_path / "town", "proj") == rig


def test_adding_a_rig_twice_is_a_conflict(tmp_path: Path, rig: Rig, source_repo: Path) -> None:
    with pytest.raises(Conflict):
        rigs.add_rig(tmp_path / "town", "proj", str(source_repo))


def test_a_removed_rig_is_not_found(tmp_path: Path, rig: Rig) -> None:
    rigs.remove_rig(tmp_path / "town", "proj")
    with pytest.raises(NotFound, match="rig add"):
        rigs.get_rig(tmp_path / "town", "proj")


def test_the_rigs_object_store_is_not_writable_by_anyone_but_its_owner(rig: Rig) -> None:
    for dirpath, _dirs, files in os.walk(rig.objects):
        assert os.stat(dirpath).st_mode & 0o022 == 0, dirpath
        for name in files:
            assert os.stat(os.path.join(dirpath, name)).st_mode & 0o222 == 0, name


def test_an_agent_repository_is_on_its_own_branch_from_main_and_borrows_the_rigs_objects(rig: Rig) -> None:
    repo = rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    assert repo.branch == "polecat/nux/gt-4f2a"
    assert git(repo.path, "symbolic-ref", "HEAD") == "refs/heads/polecat/nux/gt-4f2a"
    assert git(repo.path, "rev-parse", "main") == rigs.main_commit(rig)
    assert (repo.path / "README.md").read_text() == "project\n"
    alternates = (repo.git_dir / "objects" / "info" / "alternates").read_text().strip()
    assert Path(alternates) == rig.objects
    assert os.stat(repo.git_dir / "objects" / "info" / "alternates").st_uid == 0  # the agent cannot repoint it
    assert not list((repo.git_dir / "objects" / "pack").glob("*.pack"))  # nothing copied


def test_a_second_repository_for_the_same_agent_is_a_conflict(rig: Rig) -> None:
    rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    with pytest.raises(Conflict):
        rigs.create_agent_repo(rig, "nux", "gt-9999")


def test_the_hand_in_takes_the_branch_into_the_rig_and_names_the_checked_commit(rig: Rig) -> None:
    repo = rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    tip = commit_file(repo.path, "hello.txt", "hi\n", "polecat work")
    taken = rigs.hand_in(repo, "gt-4f2a")
    assert taken.commit == tip
    assert taken.ref == "refs/polecat/nux/gt-4f2a"
    assert taken.base == rigs.main_commit(rig)
    assert rigs.log(rig, taken.ref) == ["polecat work", "initial"]
    assert rigs.log(rig, "main") == ["initial"]  # only the merge queue moves main
    rigs.remove_agent_repo(rig, "nux")
    assert rigs.log(rig, taken.ref) == ["polecat work", "initial"]  # the hand-in outlives the repository


def test_a_branch_with_nothing_beyond_main_is_refused(rig: Rig) -> None:
    repo = rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    with pytest.raises(HandInRefused, match="no commit beyond main"):
        rigs.hand_in(repo, "gt-4f2a")
    assert "refs/polecat/nux/gt-4f2a" not in git(rig.repo, "for-each-ref")


def test_a_malformed_object_is_refused_at_hand_in_and_nothing_lands(rig: Rig) -> None:
    repo = rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    tree = git(repo.path, "rev-parse", "HEAD^{tree}")
    parent = git(repo.path, "rev-parse", "HEAD")
    bad = f"tree {tree}\nparent {parent}\nauthor Mallory <m@x> not-a-date +0000\ncommitter M <m@x> 1 +0000\n\nevil\n"
    done = subprocess.run(
        [*GIT, "-C", str(repo.path), "hash-object", "-t", "commit", "--literally", "-w", "--stdin"],
        input=bad,
        capture_output=True,
        text=True,
        check=True,
    )
    git(repo.path, "update-ref", f"refs/heads/{repo.branch}", done.stdout.strip())
    with pytest.raises(HandInRefused, match="refused the objects"):
        rigs.hand_in(repo, "gt-4f2a")
    assert "refs/polecat/" not in git(rig.repo, "for-each-ref")
    missing = subprocess.run(["git", "-C", str(rig.repo), "cat-file", "-e", done.stdout.strip()], check=False)
    assert missing.returncode != 0  # the bad object never reached the rig


def test_a_symlinked_ref_is_not_followed(rig: Rig, tmp_path: Path) -> None:
    repo = rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    secret = tmp_path / "secret"
    secret.write_text(rigs.main_commit(rig) + "\n")
    ref = repo.git_dir / "refs" / "heads" / repo.branch
    ref.unlink(missing_ok=True)
    ref.symlink_to(secret)
    with pytest.raises(HandInRefused, match="no commit the town can read"):
        rigs.hand_in(repo, "gt-4f2a")


def test_a_bead_handed_back_restarts_from_its_last_hand_in(rig: Rig) -> None:
    first = rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    tip = commit_file(first.path, "hello.txt", "hi\n", "first try")
    rigs.hand_in(first, "gt-4f2a")
    again = rigs.create_agent_repo(rig, "slit", "gt-4f2a", start=tip)
    assert git(again.path, "rev-parse", "HEAD") == tip
    assert git(again.path, "rev-parse", "main") == rigs.main_commit(rig)


def test_a_candidate_rebases_branches_onto_main_and_names_the_ones_that_conflict(rig: Rig) -> None:
    tips = []
    for agent, text in (("nux", "one\n"), ("slit", "two\n"), ("toast", "three\n")):
        repo = rigs.create_agent_repo(rig, agent, f"gt-{agent}")
        name = "same.txt" if agent != "toast" else "other.txt"
        tips.append((agent, commit_file(repo.path, name, text, f"{agent} work")))
        rigs.hand_in(repo, f"gt-{agent}")
    base = rigs.main_commit(rig)
    candidate = rigs.build_candidate(rig, base, tips)
    assert candidate.applied == ["nux", "toast"]
    assert candidate.conflicts == {"slit": ["same.txt"]}
    assert (candidate.path / "same.txt").read_text() == "one\n"
    assert (candidate.path / "other.txt").read_text() == "three\n"
    assert rigs.move_main(rig, candidate.commit, base)
    assert not rigs.move_main(rig, base, "0" * 40)  # compare-and-swap: a stale old value changes nothing
    assert rigs.log(rig, "main") == ["toast work", "nux work", "initial"]


# -- inside a real agent container --------------------------------------------------------------------
@pytest.fixture
def town_name(docker_runtime: DockerRuntime) -> Iterator[str]:
    name = f"test-{secrets.token_hex(3)}"
    yield name
    docker_runtime.cleanup(name)


def _run(runtime: DockerRuntime, image: str, town: str, repo: AgentRepo, script: str) -> dict[str, str]:
    runtime.launch(
        LaunchSpec(
            town=town, agent=repo.agent, role="polecat", image=image, command=["sh", "-c", script], mounts=repo.mounts()
        )
    )
    status = runtime.wait(town, repo.agent, timeout_s=60)
    output = runtime.logs(town, repo.agent)
    assert status.reason == "ok", output
    return dict(line.split("=", 1) for line in output.split() if "=" in line)


def _objects(rig: Rig) -> dict[str, bytes]:
    return {str(p.relative_to(rig.objects)): p.read_bytes() for p in sorted(rig.objects.rglob("*")) if p.is_file()}


ATTACK = """
objects={objects}
pack=$(ls $objects/pack/*.pack | head -n1)
rm -f "$pack" "${{pack%.pack}}.idx" 2>/dev/null; echo delete_pack=$?
touch $objects/pwned 2>/dev/null; echo new_file=$?
mkdir -p $objects/ab 2>/dev/null && echo x > $objects/ab/cdef 2>/dev/null; echo loose=$?
echo /tmp > /work/.git/objects/info/alternates 2>/dev/null; echo alternates=$?
ls {other} >/dev/null 2>&1; echo other_agent=$?
cd /work && echo work > hello.txt && git add hello.txt && git commit -qm 'polecat work'; echo commit=$?
"""


@pytest.mark.docker
def test_an_agent_commits_in_its_own_repository_and_cannot_touch_the_rig_or_another_agent(
    docker_runtime: DockerRuntime, agent_image: str, town_name: str, rig: Rig
) -> None:
    before = _objects(rig)
    other = rigs.create_agent_repo(rig, "slit", "gt-0001")
    mine = rigs.create_agent_repo(rig, "nux", "gt-4f2a")
    script = ATTACK.format(objects=rig.objects, other=other.path)
    results = _run(docker_runtime, agent_image, town_name, mine, script)
    assert results == {
        "delete_pack": "1",
        "new_file": "1",
        "loose": "1",
        "alternates": "2",
        "other_agent": "2",
        "commit": "0",
    }
    assert _objects(rig) == before
    subprocess.run(["git", "-C", str(rig.repo), "fsck", "--full", "--strict"], check=True, capture_output=True)
    assert rigs.log(rig, "main") == ["initial"]
    taken = rigs.hand_in(mine, "gt-4f2a")
    assert rigs.log(rig, taken.ref) == ["polecat work", "initial"]
