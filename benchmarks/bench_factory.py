"""Beads completed per minute and peak memory with N concurrent Claude Code polecats in containers.

Each polecat is real Claude Code in its own hardened container, driven by the scripted stand-in through the
gateway; the mayor slings ready beads to a rig, at most N polecats at a time. Needs Docker and root.
Usage: .venv/bin/python benchmarks/bench_factory.py [--slots 10 25 50] [--beads-per-slot 2]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from _report import write_report
from rich.console import Console

from gastown_mcp.factory_demo import run_factory


def mem_used_mib() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total = int(info["MemTotal"].split()[0])
    avail = int(info["MemAvailable"].split()[0])
    return (total - avail) / 1024


def run(slots: int, beads: int) -> dict[str, object]:
    plan = [(f"b{i}", f"Bead {i}: add notes file {i}", []) for i in range(beads)]
    base = mem_used_mib()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, mem_used_mib())
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_factory(Console(quiet=True), build=False, plan=plan, slots=slots, live=False)
    done.set()
    sampler.join()
    finished = sum(1 for s in result.beads.values() if s == "done")
    return {
        "slots": slots,
        "beads": beads,
        "done": finished,
        "seconds": round(result.seconds, 1),
        "beads_per_minute": round(finished / result.seconds * 60, 1),
        "peak_memory_above_baseline_mib": round(peak - base),
        "double_worked": result.double_worked,
        "lost": beads - finished,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--beads-per-slot", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for slots in args.slots:
        row = run(slots, slots * args.beads_per_slot)
        rows.append(row)
        print(json.dumps(row))
    print(
        f"{'polecats':>8} {'beads':>6} {'done':>5} {'s':>7} {'beads/min':>10} {'peak MiB':>9} {'double':>7} {'lost':>5}"
    )
    for r in rows:
        print(
            f"{r['slots']:>8} {r['beads']:>6} {r['done']:>5} {r['seconds']:>7} {r['beads_per_minute']:>10} "
            f"{r['peak_memory_above_baseline_mib']:>9} {r['double_worked']:>7} {r['lost']:>5}"
        )
    write_report("factory", rows, file="bench_factory")


if __name__ == "__main__":
    main()
