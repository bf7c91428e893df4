"""The merge queue, stepped with tick(): hand-in, rebase, gates, compare-and-swap on main, bisection, hand-back.

Real git and a real SQLite town throughout. The gates run in real containers in the tests marked docker; the
others give the town a gate runner that reads the candidate tree on the host (a hand-written fake of the
container step only: what passes is decided by the files in the exact tree that would land).
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import add_sample_rig

from gastown_mcp import rigs
from gastown_mcp.config import RigSection, Settings
from gastown_mcp.errors import InvalidInput
from gastown_mcp.models import Agent, AgentState, BeadStatus, MergeRequest, MergeState, Verb
from gastown_mcp.rigs import Candidate
from gastown_mcp.store import Store
from gastown_mcp.supervisor.merge_queue import MergeQueue
from gastown_mcp.town import Town
from gastown_mcp.town.merges import GateResult

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c", "safe.directory=*"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


class HostGates(Town):
    """A town whose gate step reads the candidate tree on the host: red when it holds a file named `culprit`."""

    runs: list[list[str]]
    named_after: dict[int, int]  # request id -> gate runs so far when it was handed back

    def merge_gates(self, actor: Agent, rig: str, candidate: Candidate) -> GateResult:
        self.runs.append(sorted(p.name for p in candidate.path.iterdir() if not p.name.startswith(".")))
        if (candidate.path / "culprit").exists():
            return GateResult(False, "FAIL: test_culprit\n[gates failed (failed, exit 1)]")
        return GateResult(True, "ok\n[gates passed]")

    def merge_verify(
        self, actor: Agent, rig: str, candidate: Candidate, requests: Sequence[MergeRequest]
    ) -> GateResult:
        """The deacon's verify commands, run on the host in the candidate tree."""
        for r in requests:
            for c in self.bead_show(actor, r.bead_id).metadata.get("verify") or []:
                if subprocess.run(["sh", "-c", c["verify"]], cwd=candidate.path).returncode:
                    return GateResult(False, f"[verify failed: {r.bead_id}]", f"{c['text']} failed")
        return GateResult(True, "[verify passed]")

    def merge_hand_back(self, actor: Agent, request: MergeRequest, *args: Any, **kwargs: Any) -> MergeRequest:
        self.named_after[request.id] = len(self.runs)
        return super().merge_hand_back(actor, request, *args, **kwargs)


@pytest.fixture
def msettings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rigs": {"proj": RigSection(gates=["true"], batch_size=4)}})


@pytest.fixture
def mtown(store: Store, msettings: Settings) -> HostGates:
    town = HostGates(store, msettings)
    town.runs, town.named_after = [], {}
    add_sample_rig(msettings.town_dir)
    return town


@pytest.fixture
def polecat(mtown: HostGates, operator: Agent) -> Callable[..., tuple[Agent, Path]]:
    """A polecat on rig `proj` with its own repository and `bead` claimed (what a spawn gives it)."""

    def make(name: str, bead: str) -> tuple[Agent, Path]:
        mtown.agent_add(operator, name, "polecat", "proj")
        start = mtown.bead_show(operator, bead).metadata.get("rework_from")
        repo = rigs.create_agent_repo(rigs.get_rig(mtown.settings.town_dir, "proj"), name, bead, start=start)
        agent = mtown.set_agent_state(
            operator, name, AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
        )
        mtown.bead_claim(agent, bead)
        return agent, repo.path

    return make


def work(path: Path, name: str, text: str, message: str) -> None:
    (path / name).write_text(text)
    git(path, "add", name)
    git(path, "commit", "-qm", message)


def main_log(town: Town, operator: Agent) -> list[str]:
    return town.rig_log(operator, "proj")


def _convoy_mail(town: Town, convoy_id: str) -> list[str]:
    return [m.body for m in town.inbox(town.agent("mayor"), unread_only=False) if convoy_id in m.subject]


def test_a_convoy_with_a_cancelled_bead_lands_when_the_rest_is_merged_and_one_all_cancelled_is_cancelled(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    mtown.agent_add(operator, "mayor", "mayor")
    criteria = [{"text": "done", "verify": "true"}]
    items = [{"key": k, "title": f"do {k}", "complexity": 1, "acceptance": criteria} for k in ("a", "b")]
    convoy = mtown.plan_apply(operator, {"title": "Two things", "items": items}, rig="proj")
    a, b = (x.id for x in convoy.beads)
    agent, path = polecat("nux", a)
    work(path, "a.txt", "a\n", "do a")
    mtown.bead_complete(agent, a, "did a")
    MergeQueue(mtown).tick()
    half = mtown.convoy_show(operator, convoy.id)
    assert not half.landed and half.progress["merged"] == 1 and half.progress["open"] == 1
    assert _convoy_mail(mtown, convoy.id) == []

    mtown.bead_update(operator, b, status="cancelled", reason="not needed after all")  # its last open bead
    landed = mtown.convoy_show(operator, convoy.id)
    assert landed.landed and not landed.cancelled
    assert (landed.progress["merged"], landed.progress["cancelled"]) == (1, 1)
    [mail] = _convoy_mail(mtown, convoy.id)
    assert "1 of its 2 beads are merged on main and 1 were cancelled" in mail
    [event] = [e for e in mtown.events(operator, limit=200) if e.verb == Verb.convoy_landed.value]
    assert event.after == {"beads": 2, "merged": 1, "cancelled": 1}

    dropped = mtown.plan_apply(operator, {"title": "Dropped", "items": items}, rig="proj")
    for x in dropped.beads:
        mtown.bead_update(operator, x.id, status="cancelled", reason="the goal was abandoned")
    gone = mtown.convoy_show(operator, dropped.id)
    assert gone.cancelled and not gone.landed and gone.progress["cancelled"] == 2
    assert mtown.bead_show(operator, dropped.id).status is BeadStatus.cancelled
    [mail] = _convoy_mail(mtown, dropped.id)
    assert "is cancelled: all 2 of its beads were cancelled" in mail
    # Reopening a cancelled bead of a settled convoy does not settle it twice.
    mtown.bead_update(operator, dropped.beads[0].id, status="open", reason="back on")
    assert len(_convoy_mail(mtown, dropped.id)) == 1


def test_completing_a_bead_hands_the_branch_in_and_it_waits_for_the_merge_queue(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    first = mtown.bead_create(operator, "first")
    later = mtown.bead_create(operator, "later", blocked_by=[first.id])
    agent, path = polecat("nux", first.id)
    work(path, "a.txt", "a\n", "add a")
    done = mtown.bead_complete(agent, first.id, "added a")
    assert (done.status, done.awaiting_merge) == (BeadStatus.done, True)
    assert done.result is not None and done.result.commit == git(path, "rev-parse", "HEAD")
    [request] = mtown.merge_list(operator)
    assert (request.state, request.bead_id, request.agent) == (MergeState.queued, first.id, "nux")
    assert mtown.status(operator).awaiting_merge == 1
    assert mtown.bead_show(operator, later.id).blocked_by == [first.id]  # dependents wait for main, not for "done"
    assert [b.id for b in mtown.bead_ready(operator)] == []

    steps = MergeQueue(mtown).tick()
    assert [(s.verb, s.target) for s in steps] == [(Verb.merge_merged, str(request.id))]
    assert main_log(mtown, operator) == ["add a", "initial"]
    merged = mtown.merge_show(operator, request.id)
    assert merged.state is MergeState.merged and merged.landed == mtown.merge_main(operator, "proj")
    assert mtown.bead_show(operator, first.id).awaiting_merge is False
    assert [b.id for b in mtown.bead_ready(operator)] == [later.id]
    assert mtown.status(operator).merges_by_state == {"merged": 1}


def test_a_polecat_cannot_complete_a_rig_bead_without_a_commit(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    bead = mtown.bead_create(operator, "nothing done")
    agent, _ = polecat("nux", bead.id)
    with pytest.raises(InvalidInput, match="no commit beyond main"):
        mtown.bead_complete(agent, bead.id, "claims it is done")
    assert mtown.bead_show(operator, bead.id).status is BeadStatus.in_progress
    assert mtown.merge_list(operator) == []


def test_two_branches_on_the_same_lines_one_lands_and_the_other_comes_back_then_lands_after_rework(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    mtown.agent_add(operator, "mayor", "mayor")
    one, two = mtown.bead_create(operator, "one"), mtown.bead_create(operator, "two")
    for name, bead, text in (("nux", one, "one\n"), ("slit", two, "two\n")):
        agent, path = polecat(name, bead.id)
        work(path, "same.txt", text, f"{name} writes same.txt")
        mtown.bead_complete(agent, bead.id, "done")

    queue = MergeQueue(mtown)
    steps = queue.tick()  # slit clashes only with its batch mate: nux lands, slit is tried again on the new main
    assert [s.verb for s in steps] == [Verb.merge_merged]
    assert main_log(mtown, operator) == ["nux writes same.txt", "initial"]
    assert [r.state for r in mtown.merge_list(operator, state=["queued"])] == [MergeState.queued]
    steps = queue.tick()  # now it conflicts with main itself, so its bead goes back, naming the new main
    assert [s.verb for s in steps] == [Verb.merge_conflicted]
    assert mtown.merge_main(operator, "proj")[:10] in steps[0].reason
    back = mtown.bead_show(operator, two.id)
    assert (back.status, back.attempts, back.awaiting_merge) == (BeadStatus.open, 1, False)
    assert back.metadata["rework_from"] == back.result.commit if back.result else False
    assert "same.txt" in back.comments[-1].body and "git rebase main" in back.comments[-1].body
    [conflicted] = mtown.merge_list(operator, state=["conflicted"])
    assert conflicted.bead_id == two.id and "same.txt" in conflicted.detail

    agent, path = polecat("toast", two.id)  # a fresh polecat starts from the old branch, with the new main
    assert (path / "same.txt").read_text() == "two\n"
    subprocess.run([*GIT, "-C", str(path), "rebase", "main"], capture_output=True, check=False)
    (path / "same.txt").write_text("one\ntwo\n")
    git(path, "add", "same.txt")
    subprocess.run([*GIT, "-C", str(path), "-c", "core.editor=true", "rebase", "--continue"], check=True)
    mtown.bead_complete(agent, two.id, "rebased onto main")
    MergeQueue(mtown).tick()
    assert main_log(mtown, operator)[0] == "slit writes same.txt"
    assert mtown.bead_show(operator, two.id).awaiting_merge is False


def test_main_never_holds_a_commit_whose_gates_failed(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    bead = mtown.bead_create(operator, "breaks the tests")
    agent, path = polecat("nux", bead.id)
    work(path, "culprit", "boom\n", "break it")
    mtown.bead_complete(agent, bead.id, "done")
    before = mtown.merge_main(operator, "proj")
    steps = MergeQueue(mtown).tick()
    assert [s.verb for s in steps] == [Verb.merge_failed]
    assert mtown.merge_main(operator, "proj") == before
    [failed] = mtown.merge_list(operator)
    assert failed.state is MergeState.failed and "FAIL: test_culprit" in failed.log_tail
    back = mtown.bead_show(operator, bead.id)
    assert back.status is BeadStatus.open and "FAIL: test_culprit" in back.comments[-1].body


@pytest.mark.parametrize("culprit_at", [0, 1, 2, 3])
def test_a_red_batch_of_four_lands_the_good_three_and_names_the_culprit_in_few_gate_runs(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]], culprit_at: int
) -> None:
    beads = [mtown.bead_create(operator, f"bead {i}") for i in range(4)]
    for i, bead in enumerate(beads):
        agent, path = polecat(f"p{i}", bead.id)
        work(path, "culprit" if i == culprit_at else f"f{i}.txt", f"{i}\n", f"change {i}")
        mtown.bead_complete(agent, bead.id, "done")
    queue = MergeQueue(mtown)
    steps = queue.tick()
    failed = [s.target for s in steps if s.verb is Verb.merge_failed]
    merged = [s.target for s in steps if s.verb is Verb.merge_merged]
    culprit = mtown.merge_list(operator, state=["failed"])
    assert [r.bead_id for r in culprit] == [beads[culprit_at].id] and failed == [str(culprit[0].id)]
    assert len(merged) == 3
    assert sorted(main_log(mtown, operator)) == sorted(
        [f"change {i}" for i in range(4) if i != culprit_at] + ["initial"]
    )
    # The culprit is named within 1 + log2(4) runs; the halves that were not yet tested take at most 2 more.
    assert mtown.named_after[culprit[0].id] <= 1 + math.log2(4)
    assert queue.gate_runs == len(mtown.runs) <= 5


def test_a_batch_that_passes_lands_in_one_gate_run(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    for i in range(4):
        bead = mtown.bead_create(operator, f"bead {i}")
        agent, path = polecat(f"p{i}", bead.id)
        work(path, f"f{i}.txt", f"{i}\n", f"change {i}")
        mtown.bead_complete(agent, bead.id, "done")
    queue = MergeQueue(mtown)
    queue.tick()
    assert queue.gate_runs == 1
    assert len(main_log(mtown, operator)) == 5


def test_after_a_crash_mid_merge_the_queue_finishes_what_landed_and_requeues_the_rest(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    one, two = mtown.bead_create(operator, "one"), mtown.bead_create(operator, "two")
    for name, bead in (("nux", one), ("slit", two)):
        agent, path = polecat(name, bead.id)
        work(path, f"{name}.txt", "x\n", f"{name} work")
        mtown.bead_complete(agent, bead.id, "done")
    first, second = sorted(mtown.merge_list(operator), key=lambda r: r.id)
    # Where a SIGKILL can leave the town: both testing; the first's landing written and main moved, the
    # second's candidate built but main not moved yet.
    mtown.merge_start(operator, [first.id, second.id])
    base = mtown.merge_main(operator, "proj")
    landed = mtown.merge_candidate(operator, "proj", base, [first])
    mtown._store.merges.set_landing([first.id], landed.commit)
    assert rigs.move_main(rigs.get_rig(mtown.settings.town_dir, "proj"), landed.commit, base)
    mtown._store.merges.set_landing([second.id], "f" * 40)

    steps = MergeQueue(mtown).tick()  # a fresh queue: what `gastown up` makes after a restart
    assert (Verb.merge_merged, str(first.id)) in [(s.verb, s.target) for s in steps]
    assert mtown.merge_show(operator, first.id).landed == landed.commit
    assert mtown.merge_show(operator, second.id).state is MergeState.merged
    log = main_log(mtown, operator)
    assert log.count("nux work") == 1 and log.count("slit work") == 1  # nothing landed twice


def test_retry_and_reject_steer_the_queue(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    bead = mtown.bead_create(operator, "flaky")
    agent, path = polecat("nux", bead.id)
    work(path, "culprit", "boom\n", "flaky change")
    mtown.bead_complete(agent, bead.id, "done")
    MergeQueue(mtown).tick()
    [failed] = mtown.merge_list(operator)
    retried = mtown.merge_retry(operator, failed.id)
    assert retried.state is MergeState.queued and mtown.bead_show(operator, bead.id).awaiting_merge
    rejected = mtown.merge_reject(operator, failed.id, "split this into two beads")
    assert rejected.state is MergeState.rejected
    back = mtown.bead_show(operator, bead.id)
    assert back.status is BeadStatus.open and "split this into two beads" in back.comments[-1].body
    with pytest.raises(InvalidInput, match="needs a reason"):
        mtown.merge_reject(operator, failed.id, " ")


# -- gates in real containers ---------------------------------------------------------------------------
SUITE = """import unittest

from greet import greet


class GreetTest(unittest.TestCase):
    def test_greets(self):
        self.assertEqual(greet("ann"), "hello, ann")
"""


@pytest.mark.docker
def test_gates_run_in_a_container_on_the_exact_candidate_tree_and_decide_what_lands(
    store: Store, msettings: Settings, operator: Agent, docker_runtime: Any, agent_image: str, tmp_path: Path
) -> None:
    from gastown_mcp.town import Fleet, FleetConfig

    gates = ["python3 -m unittest -q", "! touch /work/written-by-a-gate 2>/dev/null"]
    settings = msettings.model_copy(update={"rigs": {"web": RigSection(gates=gates, gate_timeout_seconds=60)}})
    name = f"mq{tmp_path.name[-6:].replace('_', '')}".lower()
    fleet = Fleet(store, docker_runtime, FleetConfig(town=name, town_dir=settings.town_dir, mcp_url="http://x/mcp"))
    town = Town(store, settings, fleet)
    source = tmp_path / "web"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "greet.py").write_text('def greet(name):\n    return f"hello, {name}"\n')
    (source / "test_greet.py").write_text(SUITE)
    git(source, "add", ".")
    git(source, "commit", "-qm", "initial")
    rig = rigs.add_rig(settings.town_dir, "web", str(source))
    try:
        for agent_name, path, text, message in (
            ("nux", "greet.py", 'def greet(name):\n    return f"hi, {name}"\n', "breaks greet"),
            ("slit", "version.py", "VERSION = 2\n", "adds a version"),
        ):
            bead = town.bead_create(operator, message)
            town.agent_add(operator, agent_name, "polecat", "web")
            repo = rigs.create_agent_repo(rig, agent_name, bead.id)
            agent = town.set_agent_state(
                operator, agent_name, AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
            )
            town.bead_claim(agent, bead.id)
            work(repo.path, path, text, message)
            town.bead_complete(agent, bead.id, message)
        queue = MergeQueue(town)
        steps = queue.tick()
        assert sorted(s.verb for s in steps) == sorted([Verb.merge_failed, Verb.merge_merged])
        assert rigs.log(rig, "main") == ["adds a version", "initial"]
        [failed] = town.merge_list(operator, state=["failed"])
        assert "FAIL: test_greets" in failed.log_tail and "gates failed" in failed.log_tail
        assert not (rigs.scratch_path(rig) / "written-by-a-gate").exists()
        assert queue.gate_runs == 3  # the pair, then each half (the second half is known red)
    finally:
        docker_runtime.cleanup(name)


CHILD = """
import sys
from gastown_mcp import assemble
from gastown_mcp.config import load_settings
from gastown_mcp.runtime import connect_runtime
from gastown_mcp.supervisor.merge_queue import MergeQueue
from gastown_mcp.town import FleetConfig

settings = load_settings(sys.argv[1])
fleet = FleetConfig(town=sys.argv[2], town_dir=settings.town_dir, mcp_url="http://unused/mcp")
town = assemble.open_town(settings, fleet, connect_runtime())
MergeQueue(town).tick()
"""


@pytest.mark.docker
def test_a_town_killed_mid_merge_leaves_main_whole_and_the_next_queue_lands_the_request_once(
    operator: Agent, docker_runtime: Any, agent_image: str, tmp_path: Path
) -> None:
    import os
    import signal
    import sys

    from waits import until

    from gastown_mcp import assemble
    from gastown_mcp.config import load_settings
    from gastown_mcp.town import FleetConfig

    town_dir, name = tmp_path / "town", f"kill{os.getpid() % 100000}"
    town_dir.mkdir()
    (town_dir / "town.toml").write_text('[rigs.proj]\ngates = ["sleep 60"]\ngate_timeout_seconds = 120\n')
    settings = load_settings(town_dir, env={})
    source = tmp_path / "source"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("project\n")
    git(source, "add", ".")
    git(source, "commit", "-qm", "initial")
    town = assemble.open_town(settings)
    try:
        town.rig_add(operator, "proj", str(source))
        bead = town.bead_create(operator, "one change")
        town.agent_add(operator, "nux", "polecat", "proj")
        repo = rigs.create_agent_repo(rigs.get_rig(town_dir, "proj"), "nux", bead.id)
        agent = town.set_agent_state(
            operator, "nux", AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
        )
        town.bead_claim(agent, bead.id)
        work(repo.path, "a.txt", "a\n", "the change")
        town.bead_complete(town.agent("nux"), bead.id, "done")
        before = town.merge_main(operator, "proj")
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(town_dir), name])
        try:
            until(lambda: town.merge_list(operator, state=["testing"]), 60, "the request under test")
            until(lambda: docker_runtime.list(name), 60, "the gate container")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        assert town.merge_main(operator, "proj") == before  # killed in its gates: main untouched

        (town_dir / "town.toml").write_text('[rigs.proj]\ngates = ["true"]\n')
        restarted = assemble.open_town(
            load_settings(town_dir, env={}), FleetConfig(town=name, town_dir=town_dir, mcp_url="http://x/mcp"),
            docker_runtime,
        )  # fmt: skip
        try:
            restarted.remove_orphans(operator)  # what `gastown up` does first: the dead run's gate container goes
            assert docker_runtime.list(name) == []
            MergeQueue(restarted).tick()
        finally:
            restarted.close()
        [request] = town.merge_list(operator)
        assert request.state.value == "merged" and request.attempts == 2
        log = town.rig_log(operator, "proj")
        assert log == ["the change", "initial"]  # landed once
        assert town.bead_show(operator, bead.id).awaiting_merge is False
    finally:
        town.close()
        docker_runtime.cleanup(name)


@pytest.mark.docker
def test_a_failing_verify_sends_a_bead_back_with_its_output_review_cannot_pass_it_and_its_convoy_lands_later(
    store: Store, msettings: Settings, operator: Agent, docker_runtime: Any, agent_image: str, tmp_path: Path
) -> None:
    from planning import planning_town

    from gastown_mcp.config import WitnessSection
    from gastown_mcp.town import Fleet, FleetConfig

    rig_cfg = RigSection(gates=["test -f README.md"], gate_timeout_seconds=60, review="model")
    settings = msettings.model_copy(update={"rigs": {"web": rig_cfg}, "witness": WitnessSection(respawn=False)})
    name = f"vf{tmp_path.name[-6:].replace('_', '')}".lower()
    fleet = Fleet(store, docker_runtime, FleetConfig(town=name, town_dir=settings.town_dir, mcp_url="http://x/mcp"))
    source = tmp_path / "web"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("web\n")
    git(source, "add", ".")
    git(source, "commit", "-qm", "initial")
    plan = {
        "title": "Greetings",
        "items": [
            {
                "key": "greet",
                "title": "Say hello",
                "complexity": 1,
                "acceptance": [{"text": "greet.txt says hello", "verify": "cat greet.txt && grep -q hello greet.txt"}],
            },
            {
                "key": "bye",
                "title": "Say goodbye",
                "complexity": 1,
                "acceptance": [{"text": "bye.txt exists", "verify": "test -f bye.txt"}],
            },
        ],
    }
    with planning_town(store, settings, fleet=fleet) as (town, standin):
        rig = rigs.add_rig(settings.town_dir, "web", str(source))
        town.agent_add(operator, "mayor", "mayor")
        convoy = town.plan_apply(operator, plan, rig="web", goal="greet people")
        greet, bye = (b.id for b in convoy.beads)

        def polecat_works(agent_name: str, bead: str, path: str, text: str) -> None:
            town.agent_add(operator, agent_name, "polecat", "web")
            start = town.bead_show(operator, bead).metadata.get("rework_from")
            repo = rigs.create_agent_repo(rig, agent_name, bead, start=start)
            agent = town.set_agent_state(
                operator, agent_name, AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
            )
            town.bead_claim(agent, bead)
            work(repo.path, path, text, f"{agent_name} writes {path}")
            town.bead_complete(agent, bead, f"wrote {path}")

        try:
            polecat_works("nux", greet, "greet.txt", "hi there\n")  # fails its verify command
            polecat_works("slit", bye, "bye.txt", "bye\n")
            steps = MergeQueue(town).tick()
            assert sorted(s.verb for s in steps) == sorted([Verb.merge_failed, Verb.merge_merged])
            assert rigs.log(rig, "main") == ["slit writes bye.txt", "initial"]
            [failed] = town.merge_list(operator, state=["failed"])
            assert failed.bead_id == greet
            assert f"acceptance criterion 1 of {greet} failed: greet.txt says hello" in failed.detail
            assert "hi there" in failed.log_tail and f"[verify failed: {greet}#1 exit 1]" in failed.log_tail
            back = town.bead_show(operator, greet)
            assert back.status is BeadStatus.open and "hi there" in back.comments[-1].body
            verbs = [(e.verb, e.bead_id) for e in town.events(operator, limit=500)]
            # The review was asked only about the bead whose verify passed; a "pass" never reached the other.
            assert (Verb.review_verdict.value, bye) in verbs and (Verb.review_verdict.value, greet) not in verbs
            assert (Verb.verify_failed.value, greet) in verbs and (Verb.verify_passed.value, bye) in verbs
            assert town.convoy_show(operator, convoy.id).progress == {
                "open": 1,
                "in_progress": 0,
                "awaiting_merge": 0,
                "merged": 1,
                "cancelled": 0,
            }

            polecat_works("rust", greet, "greet.txt", "hello there\n")
            assert [s.verb for s in MergeQueue(town).tick()] == [Verb.merge_merged]
            landed = town.convoy_show(operator, convoy.id)
            assert landed.landed and landed.progress["merged"] == 2
            mail = [m for m in town.inbox(town.agent("mayor"), unread_only=False) if "landed" in m.subject]
            assert len(mail) == 1 and convoy.id in mail[0].body
            assert len([r for r in standin.requests if "submit_verdict" in str(r.body.get("tools"))]) == 2
        finally:
            docker_runtime.cleanup(name)


def test_with_push_main_goes_to_the_remote_on_each_landing_and_a_moved_remote_is_followed_never_forced(
    store: Store, settings: Settings, operator: Agent, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    seed = tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    (seed / "README.md").write_text("project\n")
    git(seed, "add", ".")
    git(seed, "commit", "-qm", "initial")
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(remote)], check=True)
    town = HostGates(store, settings.model_copy(update={"rigs": {"proj": RigSection(push="origin")}}))
    town.runs, town.named_after = [], {}
    town.rig_add(operator, "proj", str(remote))

    def hand_in(name: str, file: str) -> None:
        bead = town.bead_create(operator, f"{name} work")
        town.agent_add(operator, name, "polecat", "proj")
        repo = rigs.create_agent_repo(rigs.get_rig(settings.town_dir, "proj"), name, bead.id)
        agent = town.set_agent_state(
            operator, name, AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
        )
        town.bead_claim(agent, bead.id)
        work(repo.path, file, "x\n", f"{name} work")
        town.bead_complete(town.agent(name), bead.id, "done")

    hand_in("nux", "a.txt")
    MergeQueue(town).tick()
    pushed = subprocess.run(["git", "-C", str(remote), "log", "--format=%s", "main"], capture_output=True, text=True)
    assert pushed.stdout.split("\n")[0] == "nux work"

    outside = tmp_path / "outside"  # someone else pushes to the remote meanwhile
    subprocess.run(["git", "clone", "-q", str(remote), str(outside)], check=True)
    work(outside, "b.txt", "y\n", "someone else's work")
    subprocess.run(["git", "-C", str(outside), "push", "-q", "origin", "main"], check=True)
    hand_in("slit", "c.txt")
    steps = MergeQueue(town).tick()
    assert steps == []  # the push was refused: nothing landed, main followed the remote, the request waits
    assert town.rig_log(operator, "proj")[0] == "someone else's work"
    MergeQueue(town).tick()
    log = subprocess.run(["git", "-C", str(remote), "log", "--format=%s", "main"], capture_output=True, text=True)
    assert log.stdout.split("\n")[:3] == ["slit work", "someone else's work", "nux work"]
    assert town.rig_log(operator, "proj")[0] == "slit work"


def test_a_fail_verdict_from_the_deacons_review_sends_the_bead_back_and_main_does_not_move(
    store: Store, settings: Settings, operator: Agent, tmp_path: Path
) -> None:
    from planning import planning_town

    source = tmp_path / "source"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("project\n")
    git(source, "add", ".")
    git(source, "commit", "-qm", "initial")
    rigged = settings.model_copy(update={"rigs": {"proj": RigSection(gates=["true"], review="model")}})
    with planning_town(store, rigged, town_class=HostGates) as (town, standin):
        assert isinstance(town, HostGates)
        town.runs, town.named_after = [], {}
        rig = rigs.add_rig(rigged.town_dir, "proj", str(source))
        item = {
            "key": "greet",
            "title": "Say hello",
            "description": "Write greet.txt. [review:fail]",  # the stand-in's reviewer fails this one
            "complexity": 1,
            "acceptance": [{"text": "greet.txt exists", "verify": "test -f greet.txt"}],
        }
        convoy = town.plan_apply(operator, {"title": "Greetings", "items": [item]}, rig="proj")
        [bead] = [b.id for b in convoy.beads]
        town.agent_add(operator, "nux", "polecat", "proj")
        repo = rigs.create_agent_repo(rig, "nux", bead)
        agent = town.set_agent_state(
            operator, "nux", AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
        )
        town.bead_claim(agent, bead)
        work(repo.path, "greet.txt", "hello\n", "write greet.txt")
        town.bead_complete(agent, bead, "wrote greet.txt")

        assert [s.verb for s in MergeQueue(town).tick()] == [Verb.merge_failed]
        assert rigs.log(rig, "main") == ["initial"]  # its verify passed, yet the review kept it off main
        [failed] = town.merge_list(operator, state=["failed"])
        assert failed.detail.startswith("the deacon's review sent it back: criterion 1:")
        back = town.bead_show(operator, bead)
        assert back.status is BeadStatus.open and not back.awaiting_merge
        [verdict] = [e for e in town.events(operator, limit=200) if e.verb == Verb.review_verdict.value]
        assert verdict.bead_id == bead and verdict.after["verdicts"][0]["passed"] is False
        assert not town.convoy_show(operator, convoy.id).landed
        assert len([r for r in standin.requests if "submit_verdict" in str(r.body.get("tools"))]) == 1


def test_the_leftovers_dog_removes_dead_agents_repositories_and_landed_branches_only_with_fix(
    mtown: HostGates, operator: Agent, polecat: Callable[..., tuple[Agent, Path]]
) -> None:
    from gastown_mcp.supervisor.dogs import Kennel

    rig = rigs.get_rig(mtown.settings.town_dir, "proj")
    landed, queued, working = (mtown.bead_create(operator, t).id for t in ("landed", "queued", "working"))
    nux, nux_path = polecat("nux", landed)
    work(nux_path, "a.txt", "a\n", "add a")
    mtown.bead_complete(nux, landed, "added a")
    MergeQueue(mtown).tick()  # merged: its handed-in branch is on main now
    rust, rust_path = polecat("rust", queued)
    work(rust_path, "b.txt", "b\n", "add b")
    mtown.bead_complete(rust, queued, "added b")  # handed in, still waiting for the queue
    polecat("slit", working)  # alive, still working
    for name in ("nux", "rust"):
        mtown.agent_remove(operator, name, "done")

    def leftovers(fix: bool) -> Any:
        [found] = [f for f in Kennel(mtown, doctor=True, fix=fix).run() if f.check == "leftovers"]
        return found

    seen = leftovers(fix=False)
    assert seen.state == "yellow" and "`gastown doctor --fix`" in seen.todo
    assert "worktree proj:nux" in seen.detail and "worktree proj:rust" in seen.detail
    assert f"branch proj:refs/polecat/nux/{landed}" in seen.detail
    assert "slit" not in seen.detail and f"refs/polecat/rust/{queued}" not in seen.detail  # its request is open
    assert sorted(rigs.agent_repos(rig)) == ["nux", "rust", "slit"]  # nothing removed without --fix

    assert leftovers(fix=True).fixed == "removed 3"
    assert rigs.agent_repos(rig) == ["slit"]
    assert [ref for ref, _agent, _bead in rigs.handin_refs(rig)] == [f"refs/polecat/rust/{queued}"]
    assert leftovers(fix=False).state == "green"
    [event] = [e for e in mtown.events(operator, limit=500) if e.verb == Verb.orphans_pruned.value]
    assert event.after is not None and len(event.after["removed"]) == 3
    assert [s.verb for s in MergeQueue(mtown).tick()] == [Verb.merge_merged]  # the queued one still lands
