"""The witness, stepped with `tick()` against a real store, a hand-written runtime and a movable clock."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import BrokenEngine, Clock, FakeRuntime
from waits import until

from gastown_mcp import rigs
from gastown_mcp.config import SchedulerSection, Settings, WitnessSection
from gastown_mcp.errors import Conflict, RuntimeUnavailable
from gastown_mcp.models import Agent, AgentState, BeadStatus, Role, Verb
from gastown_mcp.store import Store
from gastown_mcp.supervisor.witness import Did, Witness
from gastown_mcp.town import Town
from gastown_mcp.town.fleet import Fleet, FleetConfig


@pytest.fixture
def wsettings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "witness": WitnessSection(
                max_attempts=2, idle_seconds=60, crash_loop_failures=5, crash_loop_window_seconds=600
            )
        }
    )


def with_fleet(store: Store, settings: Settings, runtime: FakeRuntime) -> Town:
    """A town whose containers run on `runtime` (the witness sees them through the town)."""
    config = FleetConfig(town="town", town_dir=settings.town_dir, mcp_url="http://town/mcp")
    return Town(store, settings, Fleet(store, runtime, config))


@pytest.fixture
def wtown(store: Store, wsettings: Settings, runtime: FakeRuntime) -> Town:
    return with_fleet(store, wsettings, runtime)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def witness(wtown: Town, runtime: FakeRuntime, clock: Clock) -> Iterator[Witness]:
    w = Witness(wtown, clock=clock)
    yield w
    w.close()


def _launched(town: Town, operator: Agent, runtime: FakeRuntime, name: str, worktree: Path | None = None) -> Agent:
    town.agent_add(operator, name, "polecat")
    meta: dict[str, object] = {"container": f"c-{name}"}
    if worktree is not None:
        meta["worktree"] = str(worktree)
    agent = town.set_agent_state(operator, name, AgentState.running, "launched", **meta)
    runtime.run(name)
    return agent


def _mail_to_mayor(town: Town) -> list[str]:
    return [m.subject for m in town._store.messages.inbox("mayor", unread_only=False)]


def test_an_expired_lease_sends_the_bead_back_to_the_queue_with_one_more_attempt(
    wtown: Town, operator: Agent, witness: Witness, clock: Clock, runtime: FakeRuntime
) -> None:
    bead = wtown.bead_create(operator, "work")
    worker = _launched(wtown, operator, runtime, "polecat-1")
    wtown.bead_claim(worker, bead.id)
    assert witness.tick() == []
    clock.advance(wtown.settings.lease.seconds + 1)
    actions = witness.tick()
    assert [a.verb for a in actions if a.target == bead.id] == [Did.requeued]
    after = wtown._store.beads.get(bead.id)
    assert (after.status, after.assignee, after.attempts) == (BeadStatus.open, None, 1)
    verbs = [e.verb for e in wtown._store.events.since(bead_id=bead.id)]
    assert verbs[-1] == Verb.bead_released


def test_a_bead_that_keeps_failing_is_blocked_and_the_mayor_gets_mail(
    wtown: Town, operator: Agent, witness: Witness, clock: Clock, runtime: FakeRuntime
) -> None:
    wtown.agent_add(operator, "mayor", "mayor")
    bead = wtown.bead_create(operator, "flaky")
    for i in range(2):
        worker = _launched(wtown, operator, runtime, f"polecat-{i}")
        wtown.bead_claim(worker, bead.id)
        clock.advance(wtown.settings.lease.seconds + 1)
        witness.tick()
    after = wtown._store.beads.get(bead.id)
    assert after.status is BeadStatus.blocked
    assert after.attempts == 2
    assert any("blocked after 2 failed attempts" in s for s in _mail_to_mayor(wtown))


def test_an_oom_killed_container_releases_its_bead_and_records_why(
    wtown: Town, operator: Agent, witness: Witness, runtime: FakeRuntime
) -> None:
    bead = wtown.bead_create(operator, "big job")
    worker = _launched(wtown, operator, runtime, "polecat-1")
    wtown.bead_claim(worker, bead.id)
    runtime.run("polecat-1", "exited", "oom", 137)
    actions = witness.tick()
    assert (Did.exited, "polecat-1", "oom") in [(a.verb, a.target, a.reason) for a in actions]
    agent = wtown._store.agents.get("polecat-1")
    assert agent.state is AgentState.exited and agent.metadata["exit_reason"] == "oom"
    after = wtown._store.beads.get(bead.id)
    assert after.status is BeadStatus.open and after.attempts == 1
    released = [e for e in wtown._store.events.since(bead_id=bead.id) if e.verb == Verb.bead_released]
    assert released and "oom" in released[-1].after["reason"]


def test_a_vanished_container_is_treated_as_an_exit(
    wtown: Town, operator: Agent, witness: Witness, runtime: FakeRuntime
) -> None:
    bead = wtown.bead_create(operator, "job")
    worker = _launched(wtown, operator, runtime, "polecat-1")
    wtown.bead_claim(worker, bead.id)
    runtime.remove("town", "polecat-1")
    witness.tick()
    assert wtown._store.beads.get(bead.id).status is BeadStatus.open
    assert wtown._store.agents.get("polecat-1").metadata["exit_reason"] == "container gone"


def test_a_spent_budget_stops_the_agent_blocks_its_bead_and_mails_the_mayor(
    wtown: Town, operator: Agent, witness: Witness, runtime: FakeRuntime
) -> None:
    wtown.agent_add(operator, "mayor", "mayor")
    bead = wtown.bead_create(operator, "expensive")
    worker = _launched(wtown, operator, runtime, "polecat-1")
    wtown.bead_claim(worker, bead.id)
    with wtown._store.db.write() as tx:  # what the gateway records when a budget runs out
        tx.event("gateway", Verb.budget_exhausted, agent="polecat-1", after={"scope": "agent", "name": "polecat-1"})
    actions = witness.tick()
    assert Did.stopped in [a.verb for a in actions]
    assert runtime.stopped == ["polecat-1"]
    after = wtown._store.beads.get(bead.id)
    assert after.status is BeadStatus.blocked and "budget" in after.notes
    assert wtown._store.agents.get("polecat-1").metadata["exit_reason"] == "budget"
    assert any("budget exhausted" in s for s in _mail_to_mayor(wtown))


def test_an_idle_polecat_is_nudged_then_escalated_as_stalled(
    wtown: Town, operator: Agent, witness: Witness, clock: Clock, runtime: FakeRuntime, tmp_path: Path
) -> None:
    wtown.agent_add(operator, "mayor", "mayor")
    tree = tmp_path / "wt"
    tree.mkdir()
    worker = _launched(wtown, operator, runtime, "polecat-1", tree)
    wtown.bead_claim(worker, wtown.bead_create(operator, "job").id)
    clock.advance(61)
    actions = witness.tick()
    assert [a.verb for a in actions] == [Did.nudged]
    assert wtown._store.messages.has_pending_nudge("polecat-1")
    assert witness.tick() == []  # not nudged twice within T
    clock.advance(61)
    actions = witness.tick()
    assert [a.verb for a in actions] == [Did.stalled]
    assert any("stalled" in s for s in _mail_to_mayor(wtown))
    assert runtime.stopped == []  # idleness never stops an agent


def _wait_seen(witness: Witness, tree: Path, since: float) -> None:
    """Until the witness's file watch has recorded a change in `tree` at or after `since` (a bounded wait)."""
    activity = witness.activity
    assert activity is not None
    until(lambda: (activity.last_change(tree) or 0) >= since, 10, f"the file watch to see a write in {tree}")


def test_a_working_polecat_is_never_nudged_or_stopped(
    wtown: Town, operator: Agent, witness: Witness, clock: Clock, runtime: FakeRuntime, tmp_path: Path
) -> None:
    tree = tmp_path / "wt"
    tree.mkdir()
    worker = _launched(wtown, operator, runtime, "polecat-1", tree)
    wtown.bead_claim(worker, wtown.bead_create(operator, "job").id)
    assert witness.tick() == []  # the tick that starts watching the worktree
    for i in range(5):
        clock.advance(50)
        # The agent edits a file in its worktree (no tool call): that is work, seen by the file watch.
        written = clock()
        (tree / "main.py").write_text(f"print({i})\n")
        _wait_seen(witness, tree, written)
        assert witness.tick() == []
    assert runtime.stopped == []
    assert not wtown._store.messages.has_pending_nudge("polecat-1")
    assert wtown._store.agents.get("polecat-1").state is AgentState.running


def test_after_the_first_tick_a_tick_does_not_walk_the_worktree_and_a_quiet_one_is_idle(
    wtown: Town,
    operator: Agent,
    witness: Witness,
    clock: Clock,
    runtime: FakeRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = tmp_path / "wt"
    for d in range(20):
        (tree / f"d{d}").mkdir(parents=True)
        for f in range(20):
            (tree / f"d{d}" / f"f{f}.py").write_text("x\n")
    worker = _launched(wtown, operator, runtime, "polecat-1", tree)
    wtown.bead_claim(worker, wtown.bead_create(operator, "job").id)
    scans: list[str] = []
    real_scandir = os.scandir

    def counting(path: Any = ".") -> Any:
        scans.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    assert witness.tick() == []
    assert len(scans) == 21  # the first tick walks the tree once: what changed before the watch began
    scans.clear()
    for _ in range(3):
        clock.advance(30)
        written = clock()
        (tree / "d7" / "f3.py").write_text(f"y{written}\n")  # deep in the tree
        _wait_seen(witness, tree, written)
        assert witness.tick() == []
    clock.advance(61)
    assert [a.verb for a in witness.tick()] == [Did.nudged]  # no change for 61 s: idle
    assert scans == []  # no tick after the first read a directory of the tree


def test_tool_calls_keep_a_polecat_from_being_idle(
    wtown: Town, operator: Agent, witness: Witness, clock: Clock, runtime: FakeRuntime
) -> None:
    worker = _launched(wtown, operator, runtime, "polecat-1")
    wtown.bead_claim(worker, wtown.bead_create(operator, "job").id)
    clock.advance(59)
    assert witness.tick() == []


def test_a_crash_loop_blocks_the_bead_before_max_attempts(
    store: Store, settings: Settings, operator: Agent, runtime: FakeRuntime, clock: Clock
) -> None:
    town = with_fleet(
        store,
        settings.model_copy(
            update={"witness": WitnessSection(max_attempts=10, crash_loop_failures=2, crash_loop_window_seconds=600)}
        ),
        runtime,
    )
    witness = Witness(town, clock=clock)
    bead = town.bead_create(operator, "crashes")
    for i in range(2):
        worker = _launched(town, operator, runtime, f"polecat-{i}")
        town.bead_claim(worker, bead.id)
        runtime.run(worker.name, "exited", "failed", 1)
        witness.tick()
    assert town._store.beads.get(bead.id).status is BeadStatus.blocked


def test_the_witness_needs_no_runtime_for_leases(
    wtown: Town, operator: Agent, clock: Clock, add_agent: Callable[..., Agent]
) -> None:
    witness = Witness(Town(wtown._store, wtown.settings), clock=clock)  # no fleet: no runtime at all
    worker = add_agent("polecat-9")
    bead = wtown.bead_create(operator, "job")
    wtown.bead_claim(worker, bead.id)
    clock.advance(wtown.settings.lease.seconds + 1)
    assert [a.verb for a in witness.tick() if a.target == bead.id] == [Did.requeued]
    assert wtown._store.agents.get("polecat-9").role is Role.polecat


@pytest.fixture
def fleet_town(store: Store, wsettings: Settings, runtime: FakeRuntime, tmp_path: Path) -> Town:
    """A town with a fleet on the fake runtime and a rig `web` (a real git clone), so slinging spawns."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("# web\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=source, check=True)
    rigs.add_rig(wsettings.town_dir, "web", str(source))
    return with_fleet(store, wsettings, runtime)


def test_a_bead_whose_polecat_died_goes_to_a_fresh_polecat_on_the_same_rig_until_it_is_blocked(
    fleet_town: Town, operator: Agent, runtime: FakeRuntime, clock: Clock
) -> None:
    town = fleet_town
    town.agent_add(operator, "mayor", "mayor")
    witness = Witness(town, clock=clock)
    bead = town.bead_create(operator, "work")
    first = town.sling(operator, bead.id, "web")
    runtime.run(first.name, "exited", "oom", 137)

    actions = witness.tick()
    respawned = [a for a in actions if a.verb == Did.respawned]
    assert [a.verb for a in actions if a.target == bead.id] == [Did.requeued, Did.respawned]
    second = town._store.beads.get(bead.id)
    assert second.status is BeadStatus.in_progress and second.assignee not in (None, first.name)
    assert second.attempts == 1 and second.assignee in respawned[0].reason
    assert town._store.agents.get(str(second.assignee)).rig == "web"

    runtime.run(str(second.assignee), "exited", "crash", 1)  # max_attempts is 2: now it is blocked, not respawned
    actions = witness.tick()
    assert [a.verb for a in actions if a.target == bead.id] == [Did.blocked]
    assert town._store.beads.get(bead.id).status is BeadStatus.blocked
    assert any(bead.id in subject for subject in _mail_to_mayor(town))


def test_respawn_off_leaves_a_requeued_bead_in_the_queue(
    fleet_town: Town, operator: Agent, runtime: FakeRuntime, clock: Clock
) -> None:
    town = Town(
        fleet_town._store,
        fleet_town.settings.model_copy(update={"witness": WitnessSection(respawn=False)}),
        fleet_town._fleet,
    )
    bead = town.bead_create(operator, "work")
    first = town.sling(operator, bead.id, "web")
    runtime.run(first.name, "exited", "crash", 1)
    actions = Witness(town, clock=clock).tick()
    assert [a.verb for a in actions if a.target == bead.id] == [Did.requeued]
    assert town._store.beads.get(bead.id).status is BeadStatus.open


def test_a_bead_whose_polecat_cannot_start_is_blocked_after_max_attempts_and_the_mayor_gets_mail(
    fleet_town: Town, operator: Agent
) -> None:
    engine = BrokenEngine()
    assert fleet_town._fleet is not None
    fleet_town._fleet.runtime = engine
    town = fleet_town
    town.agent_add(operator, "mayor", "mayor")
    bead = town.bead_create(operator, "work")

    with pytest.raises(RuntimeUnavailable, match="could not start") as first:
        town.sling(operator, bead.id, "web")
    assert "blocked" not in str(first.value)
    after = town._store.beads.get(bead.id)
    assert (after.status, after.assignee, after.attempts) == (BeadStatus.open, None, 1)
    assert _mail_to_mayor(town) == []

    with pytest.raises(RuntimeUnavailable, match=f"{bead.id} is now blocked after 2 failed attempts"):
        town.sling(operator, bead.id, "web")  # max_attempts is 2
    assert town._store.beads.get(bead.id).status is BeadStatus.blocked
    mail = town._store.messages.inbox("mayor", unread_only=False)
    assert len(mail) == 1 and bead.id in mail[0].subject and "could not start" in mail[0].body

    with pytest.raises(Conflict, match="is blocked"):  # a mayor that keeps slinging starts nothing more
        town.sling(operator, bead.id, "web")
    assert engine.attempts == 2
    assert not [a for a in town._store.agents.all() if a.role is Role.polecat and a.state is not AgentState.removed]


def test_respawns_wait_for_a_free_polecat_slot_under_the_schedulers_max_polecats(
    fleet_town: Town, operator: Agent, runtime: FakeRuntime, clock: Clock
) -> None:
    slots = fleet_town.settings.model_copy(update={"scheduler": SchedulerSection(max_polecats=2)})
    town = Town(fleet_town._store, slots, fleet_town._fleet)
    beads = [town.bead_create(operator, f"work {i}") for i in range(4)]
    first = [town.sling(operator, b.id, "web") for b in beads]  # the operator's own slings are not limited here
    for polecat in first:
        runtime.run(polecat.name, "exited", "crash", 1)  # all four die at once

    actions = Witness(town, clock=clock).tick()
    respawned = [a.target for a in actions if a.verb == Did.respawned]
    waiting = [a for a in actions if a.verb == Did.skipped and a.target in {b.id for b in beads}]
    assert len(respawned) == 2 and len(waiting) == 2
    assert all("max_polecats" in a.reason and "waits in the queue" in a.reason for a in waiting)
    assert town.polecats_by_rig(operator) == {"web": 2}
    assert {town._store.beads.get(a.target).status for a in waiting} == {BeadStatus.open}


def test_a_respawn_that_cannot_start_counts_as_a_failure(
    fleet_town: Town, operator: Agent, runtime: FakeRuntime, clock: Clock
) -> None:
    town = fleet_town
    town.agent_add(operator, "mayor", "mayor")
    bead = town.bead_create(operator, "work")
    first = town.sling(operator, bead.id, "web")
    runtime.run(first.name, "exited", "crash", 1)
    assert town._fleet is not None
    town._fleet.runtime = BrokenEngine()  # the engine broke while the first polecat ran

    actions = Witness(town, clock=clock).tick()
    assert [a.verb for a in actions if a.target == bead.id] == [Did.requeued, Did.blocked]
    after = town._store.beads.get(bead.id)
    assert (after.status, after.attempts) == (BeadStatus.blocked, 2)
    assert any(bead.id in subject for subject in _mail_to_mayor(town))
