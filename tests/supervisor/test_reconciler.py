"""Intent in the store, carried out by the reconciler; the scheduler's limits and its breaker. Stepped with tick().

A town without a runtime (what `gastown serve`, the CLI or a stdio mayor has) only records intent; a second
`Town` over the same store with a runtime (what `gastown up` has) carries it out. The runtime is the fake from
tests/fakes.py; tests/e2e covers the same paths with real containers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fakes import BrokenEngine, Clock, FakeRuntime

from gastown_mcp import assemble
from gastown_mcp.config import RigSection, SchedulerSection, Settings, WitnessSection
from gastown_mcp.errors import Conflict, Unauthorized
from gastown_mcp.models import Agent, AgentState, BeadStatus, Role
from gastown_mcp.store import Store
from gastown_mcp.supervisor.merge_queue import MergeQueue
from gastown_mcp.supervisor.reconciler import Reconciler
from gastown_mcp.supervisor.witness import Witness
from gastown_mcp.town import Fleet, FleetConfig, Town


@pytest.fixture
def rsettings(settings: Settings) -> Settings:
    source = settings.town_dir.parent / "source"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("web\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-C", str(source)]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "initial"], check=True)
    town = Town(Store(settings), settings)
    town.rig_add(town.agent("operator"), "web", str(source))
    town.close()
    return settings.model_copy(update={"witness": WitnessSection(max_attempts=3)})


def up(store: Store, settings: Settings, runtime: FakeRuntime) -> Town:
    """The town as `gastown up` holds it: with the runtime."""
    return Town(store, settings, Fleet(store, runtime, FleetConfig(town="t", town_dir=settings.town_dir, mcp_url="x")))


def test_a_sling_without_a_runtime_is_recorded_and_the_reconciler_starts_it(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    outside = Town(store, rsettings)  # a stdio mayor, `gastown serve`, the CLI: no runtime here
    bead = outside.bead_create(operator, "work")
    requested = outside.sling(operator, bead.id, "web")
    assert requested.state is AgentState.requested and requested.metadata["hook"] == bead.id
    claimed = outside.bead_show(operator, bead.id)
    assert (claimed.status, claimed.assignee) == (BeadStatus.in_progress, requested.name)

    runtime = FakeRuntime()
    steps = Reconciler(up(store, rsettings, runtime)).tick()
    assert [(s.verb, s.target) for s in steps] == [("launched", requested.name)]
    running = outside.agent(requested.name)
    assert running.state is AgentState.running and running.metadata["generation"] == 1
    assert runtime.containers[requested.name].generation == 1
    assert Reconciler(up(store, rsettings, runtime)).tick() == []  # carried out once


def test_intent_recorded_while_the_town_is_down_survives_until_it_comes_up_and_no_lease_is_judged_meanwhile(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    outside = Town(store, rsettings.model_copy(update={"lease": rsettings.lease.model_copy(update={"seconds": 1})}))
    bead = outside.bead_create(operator, "work")
    requested = outside.sling(operator, bead.id, "web")
    clock = Clock()
    clock.advance(3600)  # the town stays down for an hour: the claim's lease ran out long ago
    town = up(store, rsettings, FakeRuntime())
    assert [a for a in Witness(town, clock=clock).tick() if a.target == bead.id] == []  # not judged before it starts
    Reconciler(town).tick()
    assert town.agent(requested.name).state is AgentState.running
    assert town.bead_show(operator, bead.id).assignee == requested.name


def test_a_stop_without_a_runtime_is_carried_out_is_not_a_failed_attempt_and_revokes_the_credentials(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    runtime = FakeRuntime()
    town = up(store, rsettings, runtime)
    bead = town.bead_create(operator, "work")
    polecat = town.sling(operator, bead.id, "web")
    token = town.agent_token(operator, polecat.name).token  # what the container holds

    outside = Town(store, rsettings)
    asked = outside.stop(operator, polecat.name, "the operator needs the slot")
    assert asked.state is AgentState.running and asked.metadata["desired"] == "stopped"
    steps = Reconciler(town).tick()
    assert [(s.verb, s.target) for s in steps] == [("stopped", polecat.name)]
    assert runtime.stopped == [polecat.name] and polecat.name not in runtime.containers
    stopped = town.agent(polecat.name)
    assert (stopped.state, stopped.metadata["exit_reason"]) == (AgentState.exited, "stopped")
    back = town.bead_show(operator, bead.id)
    assert (back.status, back.attempts) == (BeadStatus.open, 0)  # an operator's stop is not a failure
    with pytest.raises(Unauthorized):
        town.authenticate(token)


def test_a_stale_exit_from_an_older_generation_does_not_touch_the_current_run(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    runtime = FakeRuntime()
    town = up(store, rsettings, runtime)
    bead = town.bead_create(operator, "work")
    polecat = town.sling(operator, bead.id, "web")
    town.set_agent_state(operator, polecat.name, AgentState.running, "resumed", generation=2)
    runtime.run(polecat.name, "exited", "failed", 1, generation=1)  # what generation 1 left behind
    actions = Witness(town).tick()
    assert [a for a in actions if a.target in (polecat.name, bead.id)] == []
    assert town.agent(polecat.name).state is AgentState.running
    runtime.run(polecat.name, "exited", "failed", 1, generation=2)  # the current run's exit does count
    assert [a.target for a in Witness(town).tick() if a.target == polecat.name] == [polecat.name]


def commit(repo: Path, name: str) -> None:
    """What the polecat in the container does, played from the host."""
    (repo / name).write_text("done\n")
    git = ["git", "-c", "user.name=p", "-c", "user.email=p@p.invalid", "-c", "safe.directory=*", "-C", str(repo)]
    subprocess.run([*git, "add", name], check=True)
    subprocess.run([*git, "commit", "-qm", name], check=True)


def _auto(settings: Settings, **scheduler: object) -> Settings:
    return settings.model_copy(
        update={"scheduler": SchedulerSection(auto=True, **scheduler), "rigs": {"web": RigSection()}}  # type: ignore[arg-type]
    )


def test_the_scheduler_keeps_ready_work_moving_within_max_polecats(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    runtime = FakeRuntime()
    town = up(store, _auto(rsettings, max_polecats=3, spawn_per_tick=10), runtime)
    first = [town.bead_create(operator, f"bead {i}", priority=i % 3) for i in range(6)]
    waiting = [town.bead_create(operator, f"after {i}", blocked_by=[first[i].id]) for i in range(6)]
    reconciler = Reconciler(town)
    done: list[str] = []
    for _ in range(40):  # bounded: each round finishes what the live polecats hold
        reconciler.tick()
        live = [s for s in runtime.containers.values() if s.state == "running"]
        assert len(live) <= 3
        for status in live:
            for bead in town.held_by(operator, status.agent):
                polecat = town.agent(status.agent)
                commit(Path(polecat.metadata["worktree"]), f"{bead.id}.txt")
                town.bead_complete(polecat, bead.id, "done")
                done.append(bead.id)
            runtime.run(status.agent, "exited", "ok", 0)
        Witness(town).tick()
        MergeQueue(town).tick()  # dependents wait until their blocker is on main
        if len(done) == 12:
            break
    assert sorted(done) == sorted(b.id for b in first + waiting)
    assert len(set(done)) == 12  # none worked twice


def test_ready_beads_go_to_their_rig_by_label(store: Store, rsettings: Settings, operator: Agent) -> None:
    runtime = FakeRuntime()
    town = up(store, _auto(rsettings), runtime)
    mine = town.bead_create(operator, "for web", labels=["rig:web"])
    elsewhere = town.bead_create(operator, "for api", labels=["rig:api"])
    unlabelled = town.bead_create(operator, "no rig named")  # web is the only rig: it goes there
    Reconciler(town).tick()
    assert town.bead_show(operator, mine.id).status is BeadStatus.in_progress
    assert town.bead_show(operator, unlabelled.id).status is BeadStatus.in_progress
    assert town.bead_show(operator, elsewhere.id).status is BeadStatus.open


def test_launches_that_keep_failing_trip_the_breaker_mail_the_mayor_once_and_dispatch_resumes_after_the_pause(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    engine = BrokenEngine()
    settings = _auto(rsettings, breaker_failures=2, breaker_cooldown_seconds=60, spawn_per_tick=10)
    settings = settings.model_copy(update={"witness": WitnessSection(max_attempts=10)})
    town = up(store, settings, engine)
    town.agent_add(operator, "mayor", "mayor")
    beads = [town.bead_create(operator, f"bead {i}") for i in range(5)]
    clock = Clock()
    reconciler = Reconciler(town, clock=clock)
    steps = reconciler.tick()
    assert engine.attempts == 2
    assert [s.verb for s in steps].count("paused") == 1
    for _ in range(3):
        reconciler.tick()
    assert engine.attempts == 2  # paused: nothing more is launched
    mail = [m for m in town.inbox(town.agent("mayor"), unread_only=False) if "dispatch to web paused" in m.subject]
    assert len(mail) == 1

    fixed = FakeRuntime()
    assert town._fleet is not None
    town._fleet.runtime = fixed
    clock.advance(61)
    steps = reconciler.tick()
    assert "resumed" in [s.verb for s in steps]
    for _ in range(3):  # a tick starts no more than the breaker allows to fail; the town ticks again at once
        reconciler.tick()
    assert len(fixed.containers) == 5
    assert all(town.bead_show(operator, b.id).status is BeadStatus.in_progress for b in beads)


def test_two_towns_on_one_directory_are_refused(settings: Settings) -> None:
    from gastown_mcp.daemon import hold_town_lock

    with hold_town_lock(settings), pytest.raises(Conflict, match="already running"), hold_town_lock(settings):
        pass
    with hold_town_lock(settings):  # released with its holder
        pass


def test_the_cli_and_the_town_process_see_the_same_intent(rsettings: Settings, operator: Agent) -> None:
    town = assemble.open_town(rsettings)
    try:
        bead = town.bead_create(operator, "from the CLI")
        agent = town.spawn(operator, "polecat", rig="web", bead=bead.id)
        assert agent.launching and agent.role is Role.polecat
    finally:
        town.close()


def test_an_agent_whose_container_exited_can_no_longer_use_its_token(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    runtime = FakeRuntime()
    town = up(store, rsettings, runtime)
    bead = town.bead_create(operator, "work")
    polecat = town.sling(operator, bead.id, "web")
    creds = town.agent_token(operator, polecat.name)
    assert town.authenticate(creds.token).name == polecat.name
    runtime.run(polecat.name, "exited", "failed", 1)
    Witness(town).tick()
    with pytest.raises(Unauthorized):
        town.authenticate(creds.token)
    with pytest.raises(Unauthorized):
        town.gateway_agent(creds.gateway_key)


def test_no_dispatch_while_the_budget_cannot_cover_a_polecats_request(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    runtime = FakeRuntime()
    town = up(store, _auto(rsettings), runtime)
    bead = town.bead_create(operator, "work")
    town.budget_set(operator, "rig", "web", tokens=1000)  # below one request's max_tokens reservation
    reconciler = Reconciler(town)
    steps = reconciler.tick()
    assert [(s.verb, s.target) for s in steps] == [("held", "web")] and "fewer than" in steps[0].reason
    assert reconciler.tick() == []  # said once, not every tick
    assert town.bead_show(operator, bead.id).status is BeadStatus.open and runtime.containers == {}
    town.budget_set(operator, "rig", "web", tokens=10_000_000)
    assert [s.verb for s in reconciler.tick()] == ["dispatched", "launched"]


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="handing files to another uid needs root")
def test_a_session_resumed_in_a_town_upgraded_from_other_agent_ids_gets_its_files_handed_to_the_new_ids(
    store: Store, rsettings: Settings, operator: Agent
) -> None:
    import os

    from gastown_mcp.rigs import AGENT_GID, AGENT_UID

    town = up(store, rsettings, FakeRuntime())
    bead = town.bead_create(operator, "work")
    agent = town.sling(operator, bead.id, "web")
    Reconciler(town).tick()
    repo = Path(str(town.agent(agent.name).metadata["worktree"]))
    home = rsettings.town_dir / "agents" / agent.name / "claude"
    (home / "projects").mkdir()
    (home / "projects" / "session.jsonl").write_text("{}\n")
    alternates = repo / ".git" / "objects" / "info" / "alternates"
    for tree in (repo, home):  # what a town that ran its agents as uid 1000 left behind
        for dirpath, _dirs, files in os.walk(tree):
            for entry in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                os.chown(entry, 1000, 1000, follow_symlinks=False)
    town.nudge(operator, agent.name, "go on")
    town._fleet.runtime.run(agent.name, "exited", "ok", 0)  # type: ignore[union-attr]
    town.set_agent_state(operator, agent.name, AgentState.exited, "session ended")
    assert town.resume_with_nudges(operator, agent.name) is not None

    def owners(tree: Path) -> set[tuple[int, int]]:
        found = set()
        for dirpath, _dirs, files in os.walk(tree):
            for entry in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                if Path(entry).parent != alternates.parent and Path(entry) != alternates.parent:
                    st = os.lstat(entry)
                    found.add((st.st_uid, st.st_gid))
        return found

    assert owners(repo) == owners(home) == {(AGENT_UID, AGENT_GID)}
    assert (alternates.stat().st_uid, alternates.parent.stat().st_uid) == (0, 0)  # the rig's pointer stays the town's
