"""Merge requests landed per minute and median time from complete to merged, by batch size, with one culprit.

The benchmark plays N polecats from the host: each commits one file in its own agent repository and completes
its bead (one of them also adds `culprit`); then `MergeQueue(town).tick()` runs until nothing is queued, with
the gates (`sleep <gate-seconds>`, `test ! -e culprit`) in a real container per candidate. Needs Docker, root
and the agent image.
Usage: .venv/bin/python benchmarks/bench_merge_queue.py [--requests 20] [--culprit-at 7] [--gate-seconds 2]
       [--batches 1 4] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from _report import write_report

from gastown_mcp import rigs
from gastown_mcp.assemble import open_town
from gastown_mcp.config import RigSection, Settings
from gastown_mcp.models import AgentState, MergeState
from gastown_mcp.runtime import Runtime, connect_runtime
from gastown_mcp.supervisor.merge_queue import MergeQueue
from gastown_mcp.town import FleetConfig, Town, operator

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@bench.invalid", "-c", "safe.directory=*"]
RIG = "bench"


def git(repo: Path, *args: str) -> None:
    subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True)


def epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    """Wrap a town method so each call's wall time is recorded (where a tick's time goes)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    return wrapper


def hand_in_all(town: Town, requests: int, culprit_at: int) -> dict[str, float]:
    """Play `requests` polecats: one commit each, then bead_complete; returns bead id -> complete time."""
    op = operator()
    rig = rigs.get_rig(town.settings.town_dir, RIG)
    completed = {}
    for i in range(1, requests + 1):
        name = f"p{i:02d}"
        bead = town.bead_create(op, f"add notes file {i}")
        town.agent_add(op, name, "polecat", RIG)
        repo = rigs.create_agent_repo(rig, name, bead.id)
        agent = town.set_agent_state(
            op, name, AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
        )
        town.bead_claim(agent, bead.id)
        files = [f"notes-{i:02d}.txt"] + (["culprit"] if i == culprit_at else [])
        for f in files:
            (repo.path / f).write_text(f"polecat {name}\n")
        git(repo.path, "add", *files)
        git(repo.path, "commit", "-qm", f"add {' and '.join(files)}")
        town.bead_complete(agent, bead.id, f"added {', '.join(files)}")
        completed[bead.id] = time.time()
    return completed


def run(runtime: Runtime, batch: int, requests: int, culprit_at: int, gate_seconds: float) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-mq-"))
    town_name = f"mqb{secrets.token_hex(3)}"
    town: Town | None = None
    try:
        source = scratch / "source"
        subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
        (source / "README.md").write_text("bench\n")
        git(source, "add", ".")
        git(source, "commit", "-qm", "initial")
        town_dir = scratch / "town"
        town_dir.mkdir()
        gates = [f"sleep {gate_seconds:g}", "test ! -e culprit"]
        settings = Settings(
            town_dir=town_dir,
            rigs={RIG: RigSection(gates=gates, batch_size=batch, gate_timeout_seconds=120)},
        )
        fleet = FleetConfig(town=town_name, town_dir=town_dir, mcp_url="http://unused/mcp")
        town = open_town(settings, fleet, runtime)
        op = operator()
        town.rig_add(op, RIG, str(source))

        completed = hand_in_all(town, requests, culprit_at)
        gate_walls: list[float] = []
        candidate_walls: list[float] = []
        # The queue calls these on the town: timing them splits a tick into gate containers and git work.
        town.merge_gates = timed(town.merge_gates, gate_walls)
        town.merge_candidate = timed(town.merge_candidate, candidate_walls)
        queue = MergeQueue(town)
        start = time.time()
        ticks = 0
        while town.merge_list(op, state=["queued"]) and ticks < requests + 5:
            queue.tick()
            ticks += 1
        wall = time.time() - start

        final = town.merge_list(op, rig=RIG, limit=requests + 10)
        merged = [r for r in final if r.state is MergeState.merged and r.merged_at]
        failed = [r for r in final if r.state is MergeState.failed]
        culprit_bead = list(completed)[culprit_at - 1] if 0 < culprit_at <= requests else None
        waits = [epoch(r.merged_at) - completed[r.bead_id] for r in merged if r.merged_at]
        after_start = [epoch(r.merged_at) - start for r in merged if r.merged_at]
        landed = len(merged)
        return {
            "batch_size": batch,
            "requests": requests,
            "landed": landed,
            "failed": len(failed),
            "culprit_named": [r.bead_id for r in failed] == [culprit_bead],
            "gate_runs": queue.gate_runs,
            "gate_runs_per_landed": round(queue.gate_runs / landed, 2) if landed else None,
            "ticks": ticks,
            "queue_seconds": round(wall, 1),
            "landed_per_minute": round(landed / wall * 60, 1),  # wall: first tick to an empty queue
            "median_complete_to_merged_s": round(statistics.median(waits), 1) if waits else None,
            "median_queue_start_to_merged_s": round(statistics.median(after_start), 1) if after_start else None,
            "hand_in_seconds": round(max(completed.values()) - min(completed.values()), 1),
            "gate_run_median_s": round(statistics.median(gate_walls), 2) if gate_walls else None,
            "gate_overhead_median_s": round(statistics.median(gate_walls) - gate_seconds, 2) if gate_walls else None,
            "gates_share_of_queue": round(sum(gate_walls) / wall, 2),
            "candidate_build_median_s": round(statistics.median(candidate_walls), 3) if candidate_walls else None,
        }
    finally:
        if town is not None:
            town.close()
        runtime.cleanup(town_name)
        shutil.rmtree(scratch, ignore_errors=True)


def summary(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    values = [r[key] for r in rows if r[key] is not None]
    if not values:
        return {"min": None, "median": None}
    return {"min": min(values), "median": round(statistics.median(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--culprit-at", type=int, default=7, help="1-based position of the red request; 0 = none")
    parser.add_argument("--gate-seconds", type=float, default=2.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    runtime = connect_runtime()
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(args.runs):
            for batch in args.batches:
                row = run(runtime, batch, args.requests, args.culprit_at, args.gate_seconds)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        close = getattr(runtime, "close", None)  # the Docker client's connection pool
        if close is not None:
            close()

    keys = [
        "landed",
        "gate_runs",
        "gate_runs_per_landed",
        "queue_seconds",
        "landed_per_minute",
        "median_complete_to_merged_s",
        "gate_run_median_s",
    ]
    by_batch = {b: {k: summary([r for r in rows if r["batch_size"] == b], k) for k in keys} for b in args.batches}
    print(
        f"{'batch':>5} {'landed':>6} {'culprit':>7} {'gates':>5} {'gates/landed':>12} {'s':>6} {'landed/min':>10} "
        f"{'median complete->merged s':>25} {'gate run s':>10}"
    )
    for r in rows:
        print(
            f"{r['batch_size']:>5} {r['landed']:>6} {'yes' if r['culprit_named'] else 'no':>7} {r['gate_runs']:>5} "
            f"{r['gate_runs_per_landed']!s:>12} {r['queue_seconds']:>6} {r['landed_per_minute']:>10} "
            f"{r['median_complete_to_merged_s']!s:>25} {r['gate_run_median_s']!s:>10}"
        )
    ratios: dict[str, Any] = {}
    if len(args.batches) >= 2:
        low, high = args.batches[0], args.batches[-1]

        def ratio(key: str) -> float | None:
            a, b = by_batch[high][key]["median"], by_batch[low][key]["median"]
            return round(a / b, 2) if a is not None and b else None

        ratios = {
            "batches": [high, low],
            "landed_per_minute": ratio("landed_per_minute"),
            "gate_runs": ratio("gate_runs"),
        }
        print(
            f"batch {high} / batch {low}: landed per minute x{ratios['landed_per_minute']}, "
            f"gate runs x{ratios['gate_runs']}"
        )
    write_report(
        "merge_queue",
        rows,
        file="bench_merge_queue",
        config=vars(args),
        summary={str(b): s for b, s in by_batch.items()},
        ratios=ratios,
    )


if __name__ == "__main__":
    main()
