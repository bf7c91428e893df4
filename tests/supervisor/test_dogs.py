"""The dogs and the emergency stop, stepped with `tick()` against a real store and a hand-written runtime."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fakes import FakeRuntime

from gastown_mcp.config import DogsSection, SchedulerSection, Settings
from gastown_mcp.models import Agent, AgentState, BeadStatus, Verb
from gastown_mcp.store import Store
from gastown_mcp.store import db as db_mod
from gastown_mcp.supervisor.dogs import Freezer, Kennel, WalDog
from gastown_mcp.supervisor.reconciler import Reconciler
from gastown_mcp.supervisor.witness import Witness
from gastown_mcp.town import Town
from gastown_mcp.town.budgets import Reservation, Usage
from gastown_mcp.town.fleet import Fleet, FleetConfig


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


def fleet_town(store: Store, settings: Settings, runtime: FakeRuntime, **dogs: object) -> Town:
    settings = settings.model_copy(
        update={"dogs": DogsSection(**dogs), "scheduler": SchedulerSection(auto=True)}  # type: ignore[arg-type]
    )
    config = FleetConfig(town="town", town_dir=settings.town_dir, mcp_url="http://town/mcp")
    return Town(store, settings, Fleet(store, runtime, config))


@pytest.fixture
def dtown(store: Store, settings: Settings, runtime: FakeRuntime) -> Town:
    return fleet_town(store, settings, runtime)


def launched(town: Town, operator: Agent, runtime: FakeRuntime, name: str) -> Agent:
    town.agent_add(operator, name, "polecat")
    agent = town.set_agent_state(operator, name, AgentState.running, "launched", container=f"c-{name}")
    runtime.run(name)
    return agent


def mayor_mail(town: Town) -> list[str]:
    return [m.subject for m in town._store.messages.inbox("mayor", unread_only=False)]


# -- emergency stop ----------------------------------------------------------------------------------------
def test_estop_pauses_every_container_and_records_who_and_why(
    dtown: Town, operator: Agent, runtime: FakeRuntime
) -> None:
    for i in range(5):
        launched(dtown, operator, runtime, f"polecat-{i}")
    stop = dtown.estop(operator, "runaway spend")
    assert runtime.paused("town") == [f"polecat-{i}" for i in range(5)]
    assert dtown.frozen() == stop and stop["by"] == operator.name and stop["reason"] == "runaway spend"
    events = [e for e in dtown._store.events.since(limit=1000) if e.verb == Verb.town_estopped]
    assert events and events[-1].after is not None and events[-1].after["reason"] == "runaway spend"


def test_while_frozen_no_lease_expires_and_thaw_resumes_with_nothing_counted_as_failed(
    dtown: Town, operator: Agent, runtime: FakeRuntime
) -> None:
    from fakes import Clock

    clock = Clock()
    witness = Witness(dtown, clock=clock)
    bead = dtown.bead_create(operator, "work")
    worker = launched(dtown, operator, runtime, "polecat-1")
    dtown.bead_claim(worker, bead.id)
    dtown.estop(operator, "test")
    clock.advance(dtown.settings.lease.seconds * 3)
    assert witness.tick() == []
    held = dtown._store.beads.get(bead.id)
    assert (held.status, held.assignee, held.attempts) == (BeadStatus.in_progress, "polecat-1", 0)
    dtown.thaw(operator)
    assert runtime.paused("town") == []
    # The lease restarted at the thaw: the witness on the real clock finds nothing to judge.
    assert all(a.target != bead.id for a in Witness(dtown).tick())
    after = dtown._store.beads.get(bead.id)
    assert (after.status, after.attempts) == (BeadStatus.in_progress, 0)


def test_the_scheduler_does_not_dispatch_while_frozen(dtown: Town, operator: Agent) -> None:
    dtown.estop(operator, "test")
    steps = Reconciler(dtown)._dispatch()
    assert [(s.verb, s.target) for s in steps] == [("held", "*")]
    assert "emergency stop" in steps[0].reason
    dtown.thaw(operator)
    assert all(s.target != "*" for s in Reconciler(dtown)._dispatch())


def test_the_freezer_pauses_a_container_started_after_the_stop_and_resumes_all_on_thaw(
    dtown: Town, operator: Agent, runtime: FakeRuntime
) -> None:
    freezer = Freezer(dtown)
    dtown.estop(operator, "test")
    launched(dtown, operator, runtime, "polecat-late")
    assert [f.detail for f in freezer.tick()] == ["paused polecat-late"]
    dtown._store.health.clear("operator", "estop", Verb.town_thawed)  # thawed by another process
    assert freezer.tick()[0].fixed == "thawed"
    assert runtime.paused("town") == []


# -- the kennel --------------------------------------------------------------------------------------------
def test_a_deleted_journal_is_noticed_and_a_backup_covers_what_it_held(
    dtown: Town, operator: Agent, settings: Settings
) -> None:
    dtown.bead_create(operator, "a")
    kennel = Kennel(dtown)
    kennel.run()
    settings.journal_path.unlink()
    dtown.bead_create(operator, "b")  # written to a fresh journal that lacks everything before
    found = {f.check: f for f in Kennel(dtown, doctor=True, fix=False).run()}
    assert found["journal"].state == "red" and "deleted or replaced" in found["journal"].detail
    fixed = {f.check: f for f in Kennel(dtown, doctor=True, fix=True).run()}
    assert fixed["journal"].fixed.startswith("took backup")
    assert {f.check: f.state for f in Kennel(dtown, doctor=True, fix=False).run()}["journal"] == "green"


def test_the_wal_dog_starts_the_wal_over_and_says_when_a_reader_keeps_it_from_doing_so(
    dtown: Town, operator: Agent, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_mod, "WAL_RESTART_FRAMES", 64)
    for i in range(40):
        dtown.bead_create(operator, f"b{i}")
    reader = sqlite3.connect(settings.db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM beads").fetchone()  # holds its snapshot through the dog's checkpoint
    for i in range(40):
        dtown.bead_create(operator, f"c{i}")
    assert WalDog(dtown, fix=False).tick()[0].state == "green"  # doctor without --fix: only a PASSIVE checkpoint
    [held] = WalDog(dtown).tick()
    assert held.state == "yellow" and "a reader held its snapshot" in held.detail and "fuser" in held.todo
    reader.execute("COMMIT")
    reader.close()
    for i in range(200):  # the WAL starts over by itself or doubles: either way a RESTART is tried again
        dtown.bead_create(operator, f"d{i}")
    [done] = WalDog(dtown).tick()
    assert done.state == "green" and done.fixed
    frames = dtown.checkpoint_wal(operator)["frames"]
    dtown.bead_create(operator, "after")
    assert dtown.checkpoint_wal(operator)["frames"] < min(frames, 64)  # the write started the WAL over
    assert {f.check for f in Kennel(dtown, doctor=True).run()} >= {"wal", "journal"}


def test_the_backup_dog_backs_up_when_due_and_keeps_verified_copies(dtown: Town, operator: Agent) -> None:
    dtown.bead_create(operator, "a")
    Kennel(dtown).tick()
    backups = dtown.backups(operator)
    assert len(backups) == 1 and backups[0].verified


def test_a_flood_of_writes_past_journal_max_mb_is_backed_up_at_once_and_the_journal_drops_it(
    store: Store, settings: Settings, runtime: FakeRuntime, operator: Agent
) -> None:
    town = fleet_town(store, settings, runtime, journal_max_mb=0.05)
    town.bead_create(operator, "a")
    kennel = Kennel(town)
    assert [f.fixed for f in kennel.tick() if f.check == "backup"] == ["backed up"]
    cap = 0.05 * (1 << 20)
    assert not kennel.tick()  # written nothing, and the next backup is an hour away
    while town.journal_bytes(operator) <= cap:
        town.bead_create(operator, "flood", description="x" * 2000)
    [found] = [f for f in kennel.tick() if f.check == "backup"]  # still within the hour: the size made it due
    assert found.state == "green" and "past [dogs] journal_max_mb" in found.fixed
    state = town.journal_state(operator)
    newest = town.backups(operator)[0]
    assert town.journal_bytes(operator) < cap and newest.seq == state["db_seq"] and state["head_seq"] == newest.seq + 1
    town.bead_create(operator, "after")
    assert not [f for f in kennel.tick() if f.check == "backup"]  # under the bound again: back to the interval
    assert {f.check: f.state for f in Kennel(town, doctor=True, fix=False).run()}["journal"] == "green"


def test_low_disk_warns_then_holds_dispatch_then_stops_the_town(
    store: Store, settings: Settings, runtime: FakeRuntime, operator: Agent
) -> None:
    huge = 1 << 40
    town = fleet_town(store, settings, runtime, disk_warn_mb=huge)
    assert {f.check: f.state for f in Kennel(town, doctor=True).run()}["disk"] == "yellow"
    town = fleet_town(store, settings, runtime, disk_warn_mb=huge, disk_pause_mb=huge)
    Kennel(town, doctor=True).run()
    assert town.dispatch_hold() is not None and town.frozen() is None
    town = fleet_town(store, settings, runtime, disk_warn_mb=huge, disk_pause_mb=huge, disk_estop_mb=huge)
    Kennel(town, doctor=True).run()
    assert town.frozen() is not None and "disk" in town.frozen()["reason"]  # type: ignore[index]


def test_a_spent_town_budget_stops_the_town(dtown: Town, operator: Agent) -> None:
    dtown.budget_set(operator, "town", tokens=10)
    dtown.budgets.settle(
        Reservation(id=None, agent="polecat-1", rig=None, model="m", tokens=0, usd=0), Usage(input_tokens=50)
    )
    Kennel(dtown).tick()
    stop = dtown.frozen()
    assert stop is not None and "budget" in stop["reason"]


def test_a_storm_of_upstream_429s_holds_dispatch_for_the_back_off(
    store: Store, settings: Settings, runtime: FakeRuntime, operator: Agent
) -> None:
    town = fleet_town(store, settings, runtime, ratelimit_storm=3, ratelimit_backoff_seconds=60)
    res = Reservation(id=None, agent="polecat-1", rig=None, model="m", tokens=0, usd=0)
    for _ in range(2):
        town.budgets.settle(res, Usage(), upstream="anthropic", status=429, outcome="error")
    Kennel(town).tick()
    assert town.dispatch_hold() is None
    town.budgets.settle(res, Usage(), upstream="anthropic", status=429, outcome="error")
    Kennel(town).tick()
    hold = town.dispatch_hold()
    assert hold is not None and "rate-limit" in hold and town.frozen() is None


def test_a_red_finding_is_mailed_to_the_mayor_once(dtown: Town, operator: Agent, settings: Settings) -> None:
    dtown.agent_add(operator, "mayor", "mayor")
    dtown.bead_create(operator, "a")
    settings.journal_path.unlink()
    dtown.bead_create(operator, "b")
    for _ in range(3):
        Kennel(dtown, doctor=True, fix=False).run()
    assert mayor_mail(dtown).count("dogs: journal is red") == 1


def test_orphan_containers_are_removed_only_with_fix(dtown: Town, operator: Agent, runtime: FakeRuntime) -> None:
    runtime.run("ghost")
    found = {f.check: f for f in Kennel(dtown, doctor=True, fix=False).run()}
    assert "ghost" in found["orphans"].detail and "ghost" in runtime.containers
    Kennel(dtown, doctor=True, fix=True).run()
    assert "ghost" not in runtime.containers


def test_doctor_runs_the_full_integrity_check(dtown: Town, tmp_path: Path) -> None:
    found = {f.check: f for f in Kennel(dtown, doctor=True).run()}
    assert found["integrity"].state == "green" and found["integrity"].detail == "full check ok"


def test_time_spent_frozen_does_not_count_against_the_wall_clock_backstop(
    store: Store, settings: Settings, operator: Agent
) -> None:
    import time

    class Recording(FakeRuntime):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[float] = []

        def reap_expired(self, town: str | None = None, now: float | None = None) -> list:  # type: ignore[type-arg]
            assert now is not None
            self.asked.append(now)
            return []

    runtime = Recording()
    town = fleet_town(store, settings, runtime)
    town.reap_expired(operator)
    assert abs(runtime.asked[-1] - time.time()) < 5  # never frozen: the backstop uses the real time

    town.estop(operator, "drill")
    town.thaw(operator, "drill over")
    [[start, end]] = store.health.get("frozen_intervals")["intervals"]  # type: ignore[index]
    assert 0 <= end - start < 5  # the stop just lifted was recorded

    now = time.time()
    store.health.add_frozen(now - 600, now - 300)  # a 5-minute stop earlier today
    store.health.add_frozen(now - 10 * 86400, now - 10 * 86400 + 3600)  # one long before any running container
    town.reap_expired(operator)
    assert 295 < time.time() - runtime.asked[-1] < 320  # the 5 frozen minutes (and the short drill) left out
