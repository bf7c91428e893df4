"""`/metrics` histograms built from the town's events: dispatch latency (ready to claimed) and merge gate time.

Real git and a real SQLite town; the merge queue is stepped with tick(). No timing is asserted: what is checked
is which moment counts as "ready" and that each claim and each testing spell is counted exactly once.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from conftest import add_sample_rig

from gastown_mcp import rigs
from gastown_mcp.config import RigSection, Settings
from gastown_mcp.dashboard.metrics import Observed, render
from gastown_mcp.models import Agent, AgentState, Verb
from gastown_mcp.store import Store
from gastown_mcp.supervisor.merge_queue import MergeQueue
from gastown_mcp.town import Town

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c", "safe.directory=*"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _rig_town(store: Store, settings: Settings) -> Town:
    s = settings.model_copy(update={"rigs": {"proj": RigSection(gates=[])}})
    add_sample_rig(s.town_dir)
    return Town(store, s)


def _work(town: Town, operator: Agent, name: str, bead_id: str) -> None:
    """A polecat claims the bead, commits a file and completes it (handed in to the merge queue)."""
    town.agent_add(operator, name, "polecat", "proj")
    repo = rigs.create_agent_repo(rigs.get_rig(town.settings.town_dir, "proj"), name, bead_id)
    agent = town.set_agent_state(
        operator, name, AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
    )
    town.bead_claim(agent, bead_id)
    (repo.path / f"{name}.txt").write_text(name)
    git(repo.path, "add", ".")
    git(repo.path, "commit", "-qm", name)
    town.bead_complete(agent, bead_id, f"{name} did it")


def _at(town: Town, operator: Agent, bead_id: str, verb: Verb) -> datetime:
    [event] = [e for e in town.events(operator, bead_id=bead_id, limit=100) if e.verb == verb.value][-1:]
    return datetime.strptime(event.at, "%Y-%m-%dT%H:%M:%S.%fZ")


def _histogram(text: str, name: str) -> tuple[int, float]:
    count = re.search(rf"^{name}_count (\S+)$", text, re.M)
    total = re.search(rf"^{name}_sum (\S+)$", text, re.M)
    assert count and total, text
    return int(count.group(1)), float(total.group(1))


def test_dispatch_latency_counts_from_the_blockers_landing_and_gate_time_from_testing_to_merged(
    store: Store, settings: Settings, operator: Agent
) -> None:
    town = _rig_town(store, settings)
    observed = Observed()
    first = town.bead_create(operator, "first")
    later = town.bead_create(operator, "later", blocked_by=[first.id])
    observed.catch_up(town, operator)
    assert _histogram(render(town.metrics(operator), observed), "gastown_dispatch_latency_seconds") == (0, 0.0)

    _work(town, operator, "nux", first.id)
    [step] = MergeQueue(town).tick()
    assert step.verb == Verb.merge_merged
    _work(town, operator, "slit", later.id)
    observed.catch_up(town, operator)
    observed.catch_up(town, operator)  # a second scrape counts nothing twice
    text = render(town.metrics(operator), observed)

    count, total = _histogram(text, "gastown_dispatch_latency_seconds")
    first_wait = _at(town, operator, first.id, Verb.bead_claimed) - _at(town, operator, first.id, Verb.bead_created)
    later_wait = _at(town, operator, later.id, Verb.bead_claimed) - _at(town, operator, first.id, Verb.bead_merged)
    assert count == 2
    assert abs(total - (first_wait + later_wait).total_seconds()) < 1e-6  # `later` was ready when `first` landed
    assert later_wait < _at(town, operator, later.id, Verb.bead_claimed) - _at(
        town, operator, later.id, Verb.bead_created
    )

    count, total = _histogram(text, "gastown_merge_gate_seconds")
    spell = _at(town, operator, first.id, Verb.merge_merged) - _at(town, operator, first.id, Verb.merge_testing)
    assert count == 1 and abs(total - spell.total_seconds()) < 1e-6  # `later` is queued, not tested yet
    assert re.search(r'^gastown_merge_gate_seconds_bucket\{le="\+Inf"\} 1$', text, re.M)
    buckets = [int(n) for n in re.findall(r'^gastown_dispatch_latency_seconds_bucket\{le="[^"]+"\} (\d+)$', text, re.M)]
    assert buckets == sorted(buckets) and buckets[-1] == 2  # cumulative

    MergeQueue(town).tick()
    observed.catch_up(town, operator)
    assert _histogram(render(town.metrics(operator), observed), "gastown_merge_gate_seconds")[0] == 2


class CountingTown(Town):
    """A town that notes where each scrape starts reading claims (what a scrape costs is what it reads)."""

    starts: list[int]

    def dispatch_latencies(self, actor: Agent, after_id: int) -> list[tuple[int, float]]:
        self.starts.append(after_id)
        return super().dispatch_latencies(actor, after_id)


def _scrape(store: Store, settings: Settings, operator: Agent) -> tuple[str, list[int]]:
    """One scrape by a new process: a new store and town, and a new `Observed`."""
    s = settings.model_copy(update={"rigs": {"proj": RigSection(gates=[])}})
    fresh = Store(s)
    try:
        town = CountingTown(fresh, s)
        town.starts = []
        observed = Observed()
        observed.catch_up(town, operator)
        return render(town.metrics(operator), observed), town.starts
    finally:
        fresh.close()


def test_the_histograms_are_kept_in_the_town_across_restarts_archiving_and_a_restore(
    store: Store, settings: Settings, operator: Agent
) -> None:
    town = _rig_town(store, settings)
    first = town.bead_create(operator, "first")
    later = town.bead_create(operator, "later", blocked_by=[first.id])
    _work(town, operator, "nux", first.id)
    MergeQueue(town).tick()
    first_wait = _at(town, operator, first.id, Verb.bead_claimed) - _at(town, operator, first.id, Verb.bead_created)
    first_spell = _at(town, operator, first.id, Verb.merge_merged) - _at(town, operator, first.id, Verb.merge_testing)
    text, starts = _scrape(store, settings, operator)
    assert starts == [0]  # nothing saved yet: the first scrape counts from the first event
    backup_point = town.last_event_id(operator)

    _work(town, operator, "slit", later.id)
    MergeQueue(town).tick()
    later_wait = _at(town, operator, later.id, Verb.bead_claimed) - _at(town, operator, first.id, Verb.bead_merged)
    later_spell = _at(town, operator, later.id, Verb.merge_merged) - _at(town, operator, later.id, Verb.merge_testing)
    _scrape(store, settings, operator)

    # A restarted process resumes from the saved claim: it reads no claim twice and counts each once.
    last_claim = max(e.id for e in town.events(operator, limit=1000) if e.verb == Verb.bead_claimed.value)
    text, starts = _scrape(store, settings, operator)
    assert starts == [last_claim]
    count, total = _histogram(text, "gastown_dispatch_latency_seconds")
    assert count == 2 and abs(total - (first_wait + later_wait).total_seconds()) < 1e-6
    count, total = _histogram(text, "gastown_merge_gate_seconds")
    assert count == 2 and abs(total - (first_spell + later_spell).total_seconds()) < 1e-6

    # The log of an older backup: the events after the backup point are gone and new ones took their ids. The
    # saved state does not fit them (its cursor is past the end, then at a different event): counted afresh.
    saved_cursor = town.metric_state(operator, "dispatch")
    assert saved_cursor is not None and saved_cursor[0] > backup_point
    with store.db.write() as tx:
        tx.execute("DELETE FROM events WHERE id > ?", (backup_point,))
    assert town.metric_state(operator, "dispatch") is None  # past the end
    while town.last_event_id(operator) <= saved_cursor[0]:
        town.bead_create(operator, "written after the restore")
    assert town.metric_state(operator, "dispatch") is None  # a different event at the cursor
    text, starts = _scrape(store, settings, operator)
    assert starts == [0]
    count, total = _histogram(text, "gastown_dispatch_latency_seconds")
    assert count == 1 and abs(total - first_wait.total_seconds()) < 1e-6
    count, total = _histogram(text, "gastown_merge_gate_seconds")
    assert count == 1 and abs(total - first_spell.total_seconds()) < 1e-6

    # The dogs archive every event up to the backup point: what was counted stays counted, nothing twice.
    after = town.events(operator, after_id=backup_point, limit=1)[0]
    moved = town.compact(operator, at=_at_seconds(after.at) + settings.dogs.events_retention_days * 86400)
    assert moved["events_archived"] > 0 and town.events(operator, limit=1)[0].id == after.id
    text, starts = _scrape(store, settings, operator)
    assert starts == [town.metric_state(operator, "dispatch")[0]] and starts[0] > 0  # type: ignore[index]
    assert _histogram(text, "gastown_dispatch_latency_seconds")[0] == 1
    assert _histogram(text, "gastown_merge_gate_seconds")[0] == 1
    assert list((settings.town_dir / "archive").glob("events-*.jsonl.gz"))


def _at_seconds(at: str) -> float:
    return datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
