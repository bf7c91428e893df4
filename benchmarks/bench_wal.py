"""The WAL under a flood of gateway writes: bounded however long the flood lasts.

The gateway (its own uvicorn process, as `bench_gateway.py` serves it, against the scripted stand-in) takes
`--bursts` back-to-back bursts of `--streams` concurrent streaming requests, `--rounds` each, with no pause
between bursts (a pause lets a PASSIVE checkpoint catch up and the WAL start over by itself). After each burst:
the WAL file's size, its peak so far (polled every 50 ms), streams/s and the p50/p99 of a stream's time (a RESTART
checkpoint holds writers off while it runs: its stalls would show there) and the journal's size. With
`--journal-max-mb X`, the backup dog also ticks after each burst (in a process of its own, as `gastown up` ticks
the dogs every 30 s), a backup taken a moment before so that only the journal's size can make it due.
`--before DIR` runs the same bursts,
after the first gateway has stopped, against a gateway served from another copy of the source (e.g. `git archive
HEAD~3 | tar -x -C DIR`), with a town of its own. All traffic is on loopback. Every request must be metered.

Run: .venv/bin/python benchmarks/bench_wal.py [--bursts 8] [--streams 50] [--rounds 10] [--before DIR]
[--journal-max-mb X]
Writes benchmarks/results/bench_wal.json.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from _report import write_report
from bench_gateway import BODY, free_port, pct, wait_up

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
GATEWAY = str(HERE.parent / "bench_gateway.py")


async def burst(url: str, headers: dict[str, str], streams: int, rounds: int) -> tuple[int, list[float], float]:
    """`streams` concurrent clients, each sending `rounds` streaming requests one after another: (failures,
    per-stream seconds, wall seconds)."""
    failed, times = 0, []
    limits = httpx2.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx2.AsyncClient(limits=limits, timeout=60) as http:

        async def worker() -> None:
            nonlocal failed
            for _ in range(rounds):
                t0 = time.perf_counter()
                try:
                    async with http.stream(
                        "POST", url + "/v1/messages", json={**BODY, "stream": True}, headers=headers
                    ) as r:
                        data = b"".join([c async for c in r.aiter_raw()])
                    ok = r.status_code == 200 and b"message_stop" in data
                except httpx2.HTTPError:
                    ok = False
                failed += not ok
                times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        return failed, times, time.perf_counter() - t0


def run_code(code: str, env: dict[str, str] | None, *args: str) -> int:
    """Run `code` with the source `env` points at (`-P`: not the checkout in the working directory, which `-c`
    would put first on the path, ahead of `--before`'s PYTHONPATH); the number it prints."""
    out = subprocess.run([sys.executable, "-P", "-c", code, *args], env=env, cwd=ROOT, check=True, capture_output=True)
    return int(out.stdout.decode().strip())


def metered(town: str, env: dict[str, str] | None) -> int:
    """Usage rows' requests in `town`, read by the code that served it."""
    code = (
        "import sys; from gastown_mcp import assemble; from gastown_mcp.config import load_settings; "
        "from gastown_mcp.town import operator; t = assemble.open_town(load_settings(sys.argv[1], env={})); "
        "print(sum(u.requests for u in t.usage(operator()))); t.close()"
    )
    return run_code(code, env, town)


def backup_dog(town: str, env: dict[str, str] | None, journal_max_mb: float) -> int:
    """One tick of the backup dog of `town` (the code `env` points at), with `journal_max_mb` as its bound and a
    backup taken a moment ago (the interval not due): how many findings it made (1: it backed up)."""
    code = (
        "import sys, time; from gastown_mcp import assemble; from gastown_mcp.config import load_settings; "
        "from gastown_mcp.supervisor.dogs import BackupDog; s = load_settings(sys.argv[1], env={}); "
        "s = s.model_copy(update={'dogs': s.dogs.model_copy(update={'journal_max_mb': float(sys.argv[2])})}); "
        "t = assemble.open_town(s); dog = BackupDog(t, interval=3600.0); dog._last = time.time(); "
        "print(len(dog.tick())); t.close()"
    )
    return run_code(code, env, town, str(journal_max_mb))


async def flood(args: argparse.Namespace, upstream: str, env: dict[str, str] | None) -> dict[str, Any]:
    """One gateway (from the source `env` points at), a town of its own, the bursts back to back."""
    town = tempfile.mkdtemp(prefix="bench-wal-")
    atexit.register(shutil.rmtree, town, ignore_errors=True)
    make = [sys.executable, GATEWAY, "--make-town", town, "1"]
    key = subprocess.run(make, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    port = free_port()
    serve = [sys.executable, GATEWAY, "--serve-gateway", town, str(port), upstream]
    gateway = subprocess.Popen(serve, env=env, cwd=ROOT)
    url, headers = f"http://127.0.0.1:{port}", {"x-api-key": key, "anthropic-version": "2023-06-01"}
    wal, journal = Path(town) / "town.db-wal", Path(town) / "events.jsonl"
    peak, polling = 0, True

    async def poll() -> None:
        nonlocal peak
        while polling:
            if wal.exists():
                peak = max(peak, wal.stat().st_size)
            await asyncio.sleep(0.05)

    bursts: list[dict[str, Any]] = []
    try:
        await wait_up(url)
        poller = asyncio.create_task(poll())
        for n in range(args.bursts):
            failed, times, secs = await burst(url, headers, args.streams, args.rounds)
            size = wal.stat().st_size
            backed_up = backup_dog(town, env, args.journal_max_mb) if args.journal_max_mb else 0
            bursts.append({
                "burst": n, "failed": failed, "seconds": secs, "streams_per_s": len(times) / secs,
                "p50_ms": pct(times, 50) * 1000, "p99_ms": pct(times, 99) * 1000,
                "wal_mb": size / 1e6, "wal_peak_mb": max(peak, size) / 1e6,
                "journal_mb": journal.stat().st_size / 1e6, "backed_up": bool(backed_up),
            })  # fmt: skip
            b = bursts[-1]
            print(
                f"    burst {n + 1}: {len(times) - failed}/{len(times)} ok, {b['streams_per_s']:.0f} streams/s, "
                f"stream p50 {b['p50_ms']:.0f} ms p99 {b['p99_ms']:.0f} ms, WAL {b['wal_mb']:.1f} MB "
                f"(peak {b['wal_peak_mb']:.1f} MB), journal {b['journal_mb']:.1f} MB"
                + (" (the backup dog backed up)" if backed_up else ""),
                flush=True,
            )
        polling = False
        await poller
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    return {"bursts": bursts, "metered_rows": metered(town, env), "requests": args.bursts * args.streams * args.rounds}


async def run(args: argparse.Namespace) -> None:
    sp = free_port()
    upstream = f"http://127.0.0.1:{sp}"
    standin = subprocess.Popen(
        [sys.executable, "-m", "gastown_mcp.standin", "--port", str(sp), "--script", "hello"], cwd=ROOT
    )
    sources: dict[str, dict[str, str] | None] = {"now": None}
    if args.before:
        sources["before"] = {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
    results: dict[str, Any] = {}
    try:
        await wait_up(upstream)
        for name, env in sources.items():
            print(f"  {name}: {args.bursts} bursts of {args.streams} concurrent streams x {args.rounds}, no pause")
            results[name] = await flood(args, upstream, env)
    finally:
        standin.terminate()
        standin.wait(timeout=10)
    for name, r in results.items():
        last, first = r["bursts"][-1], r["bursts"][0]
        print(
            f"  {name}: WAL after burst 1 {first['wal_mb']:.1f} MB, after burst {len(r['bursts'])} "
            f"{last['wal_mb']:.1f} MB; journal {first['journal_mb']:.1f} -> {last['journal_mb']:.1f} MB; "
            f"{r['metered_rows']} of {r['requests']} requests metered"
        )
    write_report("bench_wal", results, params=vars(args))
    bad = [n for n, r in results.items() if r["metered_rows"] != r["requests"] or any(b["failed"] for b in r["bursts"])]
    if bad:
        raise SystemExit(f"FAILED: a stream failed or a request went unmetered ({', '.join(bad)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bursts", type=int, default=8)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--before", help="a copy of earlier source to serve a second gateway from, same run")
    parser.add_argument("--journal-max-mb", type=float, default=0.0, help="tick the backup dog with this bound")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
