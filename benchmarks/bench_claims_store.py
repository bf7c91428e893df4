"""Claims per second through the store with 1, 8 and 32 OS processes, and the double-claim count (must be 0).

Each process opens its own `Store` on the same town file and calls `claim()` (take the top ready bead) until
nothing is ready. Timing starts when a barrier releases every worker, so process start-up is not counted.
Run: `.venv/bin/python benchmarks/bench_claims_store.py`; figures go to stdout and to
benchmarks/results/claims_store.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _report import write_report

from gastown_mcp.config import DogsSection, Settings
from gastown_mcp.errors import NotFound
from gastown_mcp.store import Store
from gastown_mcp.store.db import now_iso

PROCESSES = (1, 8, 32)


def settings_for(town_dir: str, durable: bool) -> Settings:
    """`durable=False`: the journal is still written, but not fdatasynced before a claim returns."""
    return Settings(town_dir=Path(town_dir), dogs=DogsSection(durable=durable))


def worker(town_dir: str, name: str, start: Any, results: Any, durable: bool = True) -> None:
    store = Store(settings_for(town_dir, durable))
    won: list[str] = []
    start.wait(120)
    began = time.time()
    while True:
        try:
            won.append(store.beads.claim(name, None, 600).id)
        except NotFound:
            break
    results.put((name, won, began, time.time()))
    store.close()


def seed(store: Store, n: int) -> None:
    base = time.time() - n
    with store.db.write() as tx:
        tx.conn.executemany(
            "INSERT INTO beads (id, title, priority, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            ((f"gt-{i:06d}", f"bead {i}", i % 5, "mayor", now_iso(base + i), now_iso(base + i)) for i in range(n)),
        )


def run(processes: int, beads: int, durable: bool = True) -> dict[str, object]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="gastown-bench-") as tmp:
        store = Store(settings_for(tmp, durable))
        seed(store, beads)
        start, results = ctx.Barrier(processes), ctx.Queue()
        procs = [
            ctx.Process(target=worker, args=(tmp, f"polecat-{i}", start, results, durable)) for i in range(processes)
        ]
        for p in procs:
            p.start()
        reports = [results.get(timeout=300) for _ in procs]
        for p in procs:
            p.join()
        won = Counter(b for _, ids, _, _ in reports for b in ids)
        events = Counter(r["bead_id"] for r in store.db.query("SELECT bead_id FROM events WHERE verb='bead.claimed'"))
        unclaimed = store.db.query_one("SELECT count(*) AS n FROM beads WHERE status='open'")["n"]
        store.close()
    elapsed = max(end for _, _, _, end in reports) - min(began for _, _, began, _ in reports)
    total = sum(won.values())
    return {
        "processes": processes,
        "durable": durable,
        "beads": beads,
        "claims": total,
        "seconds": round(elapsed, 3),
        "claims_per_s": round(total / elapsed, 1),
        "double_claims": sum(n - 1 for n in won.values() if n > 1) + sum(n - 1 for n in events.values() if n > 1),
        "unclaimed": unclaimed,
        "per_process_min_max": [min(len(ids) for _, ids, _, _ in reports), max(len(ids) for _, ids, _, _ in reports)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, default=4_000, help="beads to claim per run")
    parser.add_argument("--processes", type=int, nargs="*", default=list(PROCESSES))
    parser.add_argument("--no-durable", action="store_true", help="do not fdatasync the journal before a claim returns")
    args = parser.parse_args()
    rows = [run(p, args.beads, not args.no_durable) for p in args.processes]
    print(f"claims through the store, {args.beads} beads per run, claim() until none are ready")
    print(f"{'procs':>6} {'claims':>7} {'seconds':>8} {'claims/s':>9} {'double':>7} {'unclaimed':>9}")
    for r in rows:
        print(
            f"{r['processes']:>6} {r['claims']:>7} {r['seconds']:>8} {r['claims_per_s']:>9}"
            f" {r['double_claims']:>7} {r['unclaimed']:>9}"
        )
    write_report("claims_store", rows)


if __name__ == "__main__":
    main()
