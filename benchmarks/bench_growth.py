"""A long simulated run: memory, file descriptors, SQLite connections and the witness's tick time stay flat while
agents come and go and usage piles up; and `town_status` at a million beads, from maintained counts.

The run: `--days` simulated days; each day `--agents`/days agent lifetimes (added, running, exited), the same
usage rows as the gateway writes (`--usage`/days, in batches), a few worker threads retired as anyio retires
them, and the day's compaction (`Town.compact`: exited agents archived, usage rolled into daily totals past
`usage_retention_days`, events rotated past `events_retention_days`) with a verified backup every
`--backup-every` days (which trims the journal). A checkpoint after each tenth of the run prints the hot tables,
RSS, fds, connections and the witness tick (median of 5). `--no-compact` runs the same workload without the
compaction, as the reference that grows.

Then `--beads` beads are bulk-inserted and `town_status` is timed (median of 50) against the scan it replaced
(`GROUP BY status` + the ready index count) in the same run.

Run: .venv/bin/python benchmarks/bench_growth.py                       (small: 5k lifetimes, 50k usage rows)
     .venv/bin/python benchmarks/bench_growth.py --agents 100000 --usage 1000000 --beads 1000000
Writes benchmarks/results/bench_growth.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _report import write_report

from gastown_mcp.assemble import open_town
from gastown_mcp.config import DogsSection, Settings
from gastown_mcp.models import AgentState, now_iso
from gastown_mcp.store import Store
from gastown_mcp.supervisor.witness import Witness
from gastown_mcp.town import Town, operator

LIVE = 20  # agents alive throughout (what the witness watches)
DAY = 86400.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def median_ms(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 3)


def usage_rows(store: Store, n: int, at: float, first: int) -> None:
    """`n` usage rows as the gateway writes them, stamped at simulated time `at`, 1,000 per transaction."""
    stamp = now_iso(at)
    for lo in range(0, n, 1000):
        with store.db.write() as tx:
            tx.conn.executemany(
                """INSERT INTO usage (at, agent, rig, model, upstream, input_tokens, output_tokens, cost_usd,
                   status, outcome) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                (
                    (stamp, f"p{(first + i) % 500}", "web", "claude-sonnet", "anthropic", 900, 120, 0.0045, 200, "ok")
                    for i in range(lo, min(n, lo + 1000))
                ),
            )


def retire_threads(town: Town, n: int = 4) -> None:
    """Short-lived threads that touch the database and end, as anyio's worker threads do."""
    for _ in range(n):
        t = threading.Thread(target=town.status, args=(operator(),))
        t.start()
        t.join()


def simulate(agents: int, usage: int, days: int, backup_every: int, compact: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gastown-growth-") as tmp:
        settings = Settings(
            town_dir=Path(tmp),
            dogs=DogsSection(
                durable=False, agent_archive_seconds=0, usage_retention_days=3, events_retention_days=3, backup_keep=2
            ),
        )
        town = open_town(settings)
        store: Store = town._store  # the benchmark writes usage rows in bulk, as the gateway does one by one
        op = operator()
        for i in range(LIVE):
            town.agent_add(op, f"live-{i}", "polecat", "web")
            town.set_agent_state(op, f"live-{i}", AgentState.running)
        witness = Witness(town)
        start = time.time()
        per_day, usage_per_day = max(1, agents // days), usage // days
        checkpoints, n = [], 0
        began = time.perf_counter()
        for day in range(1, days + 1):
            sim_now = start + day * DAY
            for _ in range(per_day):
                name = f"p-{n}"
                town.agent_add(op, name, "polecat", "web")
                town.set_agent_state(op, name, AgentState.running)
                town.agent_exited(op, name, "ok", 0)
                n += 1
                if n % 100 == 0:
                    witness.tick()  # as its 5 s interval would: it keeps up with the events (1,000 a tick)
            usage_rows(store, usage_per_day, sim_now, day * usage_per_day)
            retire_threads(town)
            witness.tick()
            if compact:
                town.compact(op, at=sim_now)
                if day % backup_every == 0:
                    town.backup_now(op)
            if day % max(1, days // 10) == 0 or day == days:
                conn = store.db.conn

                def rows(table: str, c: Any = conn) -> int:
                    return int(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

                point = {
                    "day": day,
                    "lifetimes": n,
                    "usage_written": day * usage_per_day,
                    "agents_hot": rows("agents"),
                    "agents_archived": rows("agents_archive"),
                    "usage_rows": rows("usage"),
                    "usage_daily_rows": rows("usage_daily"),
                    "events_rows": rows("events"),
                    "rss_mb": round(rss_mb(), 1),
                    "fds": fds(),
                    "connections": store.db.connections(),
                    "witness_tick_ms": median_ms(witness.tick, 5),
                    "status_ms": median_ms(lambda: town.status(op), 5),
                    "usage_report_ms": median_ms(lambda: town.usage(op), 3),
                    "db_mb": round(settings.db_path.stat().st_size / 1e6, 1),
                    "journal_mb": round(settings.journal_path.stat().st_size / 1e6, 1),
                    "elapsed_s": round(time.perf_counter() - began, 1),
                }
                checkpoints.append(point)
                print(
                    f"  day {day:>3}: {n:>7} lifetimes, agents hot {point['agents_hot']:>6}, usage rows "
                    f"{point['usage_rows']:>8}, events {point['events_rows']:>7}, RSS {point['rss_mb']:6.1f} MB, "
                    f"fds {point['fds']:>3}, conns {point['connections']:>2}, witness tick "
                    f"{point['witness_tick_ms']:7.2f} ms, status {point['status_ms']:6.2f} ms, usage report "
                    f"{point['usage_report_ms']:7.2f} ms, journal {point['journal_mb']:6.1f} MB"
                )
        town.close()
    first, last = checkpoints[0], checkpoints[-1]
    return {
        "compact": compact,
        "checkpoints": checkpoints,
        "last_over_first": {
            k: round(last[k] / first[k], 2) if first[k] else None
            for k in ("rss_mb", "fds", "connections", "witness_tick_ms", "status_ms", "usage_report_ms")
        },
    }


def status_at_scale(beads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gastown-status-") as tmp:
        settings = Settings(town_dir=Path(tmp), dogs=DogsSection(durable=False))
        town = open_town(settings)
        store: Store = town._store
        base = time.time() - beads
        statuses = ("open", "open", "done", "done", "done", "in_progress", "blocked", "cancelled")
        for lo in range(0, beads, 50_000):
            with store.db.write() as tx:
                tx.conn.executemany(
                    """INSERT INTO beads (id, title, priority, status, created_by, created_at, updated_at)
                       VALUES (?,?,?,?,?,?,?)""",
                    (
                        (f"gt-{i:07d}", f"bead {i}", i % 5, statuses[i % 8], "mayor", now_iso(base + i), now_iso(base))
                        for i in range(lo, min(beads, lo + 50_000))
                    ),
                )
        op = operator()
        conn = store.db.conn

        def scan() -> None:  # what town_status counted before: a scan of every bead
            conn.execute("SELECT status, count(*) FROM beads GROUP BY status").fetchall()
            conn.execute(
                "SELECT count(*) FROM beads INDEXED BY beads_ready "
                "WHERE status='open' AND open_blockers=0 AND assignee IS NULL"
            ).fetchone()
            conn.execute("SELECT count(*) FROM beads WHERE merge_pending=1").fetchone()

        status = town.status(op)
        result = {
            "beads": beads,
            "status_ms": median_ms(lambda: town.status(op), 50),
            "scan_ms": median_ms(scan, 5),
            "by_status": status.beads_by_status,
            "ready": status.ready,
        }
        town.close()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=5_000, help="agent lifetimes over the run")
    parser.add_argument("--usage", type=int, default=50_000, help="usage rows over the run")
    parser.add_argument("--days", type=int, default=30, help="simulated days")
    parser.add_argument("--backup-every", type=int, default=5, help="days between verified backups")
    parser.add_argument("--beads", type=int, default=100_000, help="beads for the town_status measurement")
    parser.add_argument("--no-compact", action="store_true", help="also run the workload without compaction")
    args = parser.parse_args()
    runs = []
    for compact in (True, False) if args.no_compact else (True,):
        print(f"{args.agents} agent lifetimes, {args.usage} usage rows over {args.days} days, compaction {compact}")
        runs.append(simulate(args.agents, args.usage, args.days, args.backup_every, compact))
        print("  last / first checkpoint:", runs[-1]["last_over_first"])
    scale = status_at_scale(args.beads)
    print(
        f"town_status at {scale['beads']} beads: {scale['status_ms']:.3f} ms p50 "
        f"(the scan it replaced: {scale['scan_ms']:.1f} ms, {scale['scan_ms'] / scale['status_ms']:.0f}x)"
    )
    write_report("bench_growth", {"runs": runs, "status": scale}, params=vars(args))


if __name__ == "__main__":
    main()
