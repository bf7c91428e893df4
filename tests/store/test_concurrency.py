"""Many OS processes claiming through their own `Store` on one SQLite file: every claim is won exactly once.

Workers run in spawned processes (nothing inherited but their arguments) and report what they won through a
queue; the test checks their reports against the final table and the audit trail.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from waits import until

from gastown_mcp.config import Settings
from gastown_mcp.errors import Conflict, NotFound
from gastown_mcp.models import Verb
from gastown_mcp.store import Store

pytestmark = pytest.mark.slow

PROCESSES = 16
BEADS = 2_000
DEADLINE_S = 60


def claim_until_empty(town_dir: str, name: str, start: Any, results: Any) -> None:
    store = Store(Settings(town_dir=Path(town_dir)))
    won: list[str] = []
    errors: list[str] = []
    start.wait(DEADLINE_S)
    while True:
        try:
            won.append(store.beads.claim(name, None, 600).id)
        except NotFound:
            break
        except Exception as exc:  # reported to the parent, which fails the test with it
            errors.append(f"{type(exc).__name__}: {exc}")
            break
    store.close()
    results.put((name, won, errors))


def claim_one(town_dir: str, name: str, bead_id: str, start: Any, results: Any) -> None:
    store = Store(Settings(town_dir=Path(town_dir)))
    start.wait(DEADLINE_S)
    try:
        store.beads.claim(name, bead_id, 600)
        outcome = "won"
    except Conflict as exc:
        outcome = f"conflict: {exc}"
    except Exception as exc:
        outcome = f"error {type(exc).__name__}: {exc}"
    store.close()
    results.put((name, outcome))


def run_workers(target: Any, args_for: Any, n: int) -> list[Any]:
    """Start `n` spawned workers behind a barrier; collect one result each within a deadline."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), start, results)) for i in range(n)]
    for p in procs:
        p.start()
    out: list[Any] = []

    def all_reported() -> bool:
        with contextlib.suppress(queue.Empty):
            while len(out) < n:
                out.append(results.get_nowait())
        return len(out) == n

    try:
        until(all_reported, DEADLINE_S, f"all {n} workers to report", every_s=0.05)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * n
    return out


def test_sixteen_processes_claim_two_thousand_beads_each_exactly_once(store: Store, settings: Settings) -> None:
    created = {store.beads.create("mayor", title=f"bead {i}", priority=i % 5).id for i in range(BEADS)}
    assert len(created) == BEADS

    reports = run_workers(claim_until_empty, lambda i: (str(settings.town_dir), f"polecat-{i}"), PROCESSES)

    assert [errors for _, _, errors in reports if errors] == []
    won = Counter(bead_id for _, ids, _ in reports for bead_id in ids)
    assert set(won) == created, "some beads were never claimed"
    assert max(won.values()) == 1, [b for b, n in won.items() if n > 1]
    assert sum(1 for _, ids, _ in reports if ids) > 1, "one process did all the work: the test raced nothing"

    holders = {name: set(ids) for name, ids, _ in reports}
    rows = store.db.query("SELECT id, status, assignee FROM beads")
    assert all(r["status"] == "in_progress" for r in rows)
    assert {r["id"] for r in rows if r["id"] not in holders[r["assignee"]]} == set()

    claimed_events = Counter(
        r["bead_id"]
        for r in store.db.query("SELECT bead_id FROM events WHERE verb IN ('bead.claimed','bead.taken_over')")
    )
    assert claimed_events == Counter(dict.fromkeys(created, 1))
    assert store.beads.ready() == []


def test_sixteen_processes_racing_for_one_bead_have_exactly_one_winner(store: Store, settings: Settings) -> None:
    bead = store.beads.create("mayor", title="the one")

    reports = run_workers(claim_one, lambda i: (str(settings.town_dir), f"polecat-{i}", bead.id), PROCESSES)

    winners = [name for name, outcome in reports if outcome == "won"]
    losers = [outcome for _, outcome in reports if outcome != "won"]
    assert len(winners) == 1
    assert len(losers) == PROCESSES - 1
    assert all(o.startswith(f"conflict: bead {bead.id} is claimed by {winners[0]} until") for o in losers), losers
    assert store.beads.get(bead.id).assignee == winners[0]
    assert [e.verb for e in store.events.since(bead_id=bead.id)] == [Verb.bead_created, Verb.bead_claimed]
