"""`bead_ready` latency through `Town` at 1k, 10k and 100k beads, in a town that looks lived-in.

Each town is built in one bulk transaction through the store's `Database` (about 30% done, 5% cancelled,
10% in progress, 5% blocked, 15% waiting on open blockers, the rest ready), then queried through
`Town.bead_ready` as a polecat would. Run: `.venv/bin/python benchmarks/bench_ready.py`
Figures go to stdout and to benchmarks/results/ready.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from _report import write_report

from gastown_mcp.config import Settings
from gastown_mcp.store import Store
from gastown_mcp.store.db import now_iso
from gastown_mcp.store.ids import ALPHABET
from gastown_mcp.town import Town, operator

SIZES = (1_000, 10_000, 100_000)


def base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def build(store: Store, n: int, rng: random.Random) -> dict[str, int]:
    """Insert `n` beads with a realistic status mix and blocker graph in one transaction."""
    start = time.time() - n  # one bead a second, oldest first
    lease = now_iso(time.time() + 600)
    ids = [f"gt-{base36(i, 6)}" for i in range(n)]
    statuses: list[str] = []
    for _ in range(n):
        x = rng.random()
        statuses.append(
            "done"
            if x < 0.30
            else "cancelled"
            if x < 0.35
            else "in_progress"
            if x < 0.45
            else "blocked"
            if x < 0.50
            else "open"
        )
    deps: list[tuple[str, str]] = []
    open_blockers = [0] * n
    for i in range(1, n):
        # Some open beads wait on an earlier bead (earlier only, so there are no cycles); links to finished
        # beads exist too and do not block.
        if statuses[i] == "open" and rng.random() < 0.35:
            for j in {rng.randrange(i) for _ in range(rng.randint(1, 3))}:
                deps.append((ids[i], ids[j]))
                if statuses[j] not in ("done", "cancelled"):
                    open_blockers[i] += 1
    with store.db.write() as tx:
        tx.conn.executemany(
            """INSERT INTO beads (id, title, type, priority, status, assignee, lease_expires_at, open_blockers,
               created_by, created_at, updated_at, closed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)""",
            (
                (
                    ids[i],
                    f"bead {i}: do the thing",
                    rng.choice(("task", "bug", "feature", "chore")),
                    rng.choice((0, 1, 2, 2, 2, 3, 4)),
                    statuses[i],
                    f"polecat-{i % 32}" if statuses[i] == "in_progress" else None,
                    lease if statuses[i] == "in_progress" else None,
                    open_blockers[i],
                    "mayor",
                    now_iso(start + i),
                    now_iso(start + i),
                    now_iso(start + i) if statuses[i] in ("done", "cancelled") else None,
                )
                for i in range(n)
            ),
        )
        tx.conn.executemany(
            "INSERT INTO deps (bead_id, depends_on, kind, created_at, created_by) VALUES (?,?,'blocks',?,?)",
            ((a, b, now_iso(start), "mayor") for a, b in deps),
        )
        tx.conn.executemany(
            "INSERT INTO labels (bead_id, label) VALUES (?,?)",
            ((ids[i], rng.choice(("web", "api", "db", "ci"))) for i in range(0, n, 3)),
        )
    store.db.conn.execute("ANALYZE")
    counts = dict(store.beads.counts())
    counts["ready"] = store.beads.ready_count()
    counts["waiting_on_blockers"] = sum(1 for i in range(n) if statuses[i] == "open" and open_blockers[i])
    return counts


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(n: int, calls: int, rng: random.Random) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gastown-bench-") as tmp:
        settings = Settings(town_dir=Path(tmp))
        store = Store(settings)
        town = Town(store, settings)
        t0 = time.perf_counter()
        counts = build(store, n, rng)
        build_s = time.perf_counter() - t0
        polecat = town.agent_add(operator(), "polecat-bench", "polecat").agent
        expected = [s.id for s in store.beads.ready(limit=20)]
        for _ in range(50):  # warm the page cache and the renewal throttle
            town.bead_ready(polecat)
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            got = town.bead_ready(polecat)
            samples.append((time.perf_counter() - t) * 1000)
        assert [s.id for s in got] == expected, "bead_ready changed while measuring"
        store.close()
    return {
        "beads": n,
        "calls": calls,
        "p50_ms": round(percentile(samples, 50), 4),
        "p99_ms": round(percentile(samples, 99), 4),
        "mean_ms": round(statistics.fmean(samples), 4),
        "build_s": round(build_s, 2),
        "mix": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2_000, help="bead_ready calls per size")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = [measure(n, args.calls, rng) for n in args.sizes]
    print(f"bead_ready through Town (limit 20), {args.calls} calls per size")
    print(f"{'beads':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'ready':>7} {'build s':>8}")
    for r in rows:
        mix = r["mix"]
        assert isinstance(mix, dict)
        figures = f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['mean_ms']:>8.3f}"
        print(f"{r['beads']:>8} {figures} {mix['ready']:>7} {r['build_s']:>8}")
    write_report("bead_ready", rows, file="ready")


if __name__ == "__main__":
    main()
