"""Gateway overhead: added latency vs calling the stand-in directly (JSON, streaming TTFB), and 50 streams.

Run: `.venv/bin/python benchmarks/bench_gateway.py [--requests 400] [--streams 50]`. The stand-in and the
gateway each run as their own uvicorn subprocess so the gateway's CPU and memory can be read from /proc.
Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "scripted-standin", "max_tokens": 256, "messages": [{"role": "user", "content": "benchmark " * 40}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_gateway(town_dir: str, port: int, upstream: str) -> None:
    """Child process: one town store, one gateway app, uvicorn."""
    from gastown_mcp import assemble, serving
    from gastown_mcp.config import load_settings
    from gastown_mcp.gateway import build_gateway

    env = {"GASTOWN_GATEWAY__UPSTREAMS": json.dumps({"standin": {"base_url": upstream}})}
    settings = load_settings(town_dir, env={**env, "GASTOWN_GATEWAY__DEFAULT_UPSTREAM": "standin"})
    app = build_gateway(assemble.open_town(settings), {"ANTHROPIC_API_KEY": "sk-bench-provider-key"})
    serving.run(app, "127.0.0.1", port)


async def wait_up(url: str) -> None:
    async with httpx2.AsyncClient() as http:
        for _ in range(200):
            try:
                await http.post(url + "/v1/messages/count_tokens", json=BODY)
                return
            except httpx2.TransportError:
                await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def json_latency(http: httpx2.AsyncClient, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await http.post(url + "/v1/messages", json=BODY, headers=headers)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return out


async def stream_ttfb(http: httpx2.AsyncClient, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with http.stream("POST", url + "/v1/messages", json={**BODY, "stream": True}, headers=headers) as r:
            first = True
            async for _chunk in r.aiter_raw():
                if first:
                    out.append((time.perf_counter() - t0) * 1000)
                    first = False
        assert r.status_code == 200
    return out


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS KiB, peak RSS KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return cpu, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


async def concurrent_streams(url: str, headers: dict[str, str], streams: int, rounds: int) -> tuple[int, int, float]:
    ok = errors = 0
    limits = httpx2.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx2.AsyncClient(limits=limits, timeout=60) as http:

        async def worker() -> None:
            nonlocal ok, errors
            for _ in range(rounds):
                try:
                    async with http.stream(
                        "POST", url + "/v1/messages", json={**BODY, "stream": True}, headers=headers
                    ) as r:
                        data = b"".join([c async for c in r.aiter_raw()])
                    if r.status_code == 200 and b"message_stop" in data:
                        ok += 1
                    else:
                        errors += 1
                except httpx2.HTTPError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
    return ok, errors, time.perf_counter() - t0


async def run(args: argparse.Namespace) -> None:
    from gastown_mcp import assemble
    from gastown_mcp.config import load_settings
    from gastown_mcp.town import operator

    town = tempfile.mkdtemp(prefix="bench-town-")
    bench = assemble.open_town(load_settings(town, env={}))
    key = bench.agent_add(operator(), "polecat-1", "polecat", rig="web").gateway_key
    if args.budget:
        bench.budget_set(operator(), "town", tokens=10**12, usd=10**6)
    bench.close()
    sp, gp = free_port(), free_port()
    py = sys.executable
    standin = subprocess.Popen([py, "-m", "gastown_mcp.standin", "--port", str(sp), "--script", "hello"], cwd=ROOT)
    gateway = subprocess.Popen([py, __file__, "--serve-gateway", town, str(gp), f"http://127.0.0.1:{sp}"], cwd=ROOT)
    direct, via = f"http://127.0.0.1:{sp}", f"http://127.0.0.1:{gp}"
    gw_headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    try:
        await wait_up(direct)
        await wait_up(via)
        async with httpx2.AsyncClient(timeout=30) as http:
            await json_latency(http, direct, {}, 50)  # warm-up
            await json_latency(http, via, gw_headers, 50)
            jd = await json_latency(http, direct, {}, args.requests)
            jg = await json_latency(http, via, gw_headers, args.requests)
            sd = await stream_ttfb(http, direct, {}, args.requests)
            sg = await stream_ttfb(http, via, gw_headers, args.requests)
        budget = "on" if args.budget else "off"
        print(f"gateway benchmark: {args.requests} sequential requests each, budget checks {budget}")
        for label, d, g in (("JSON total", jd, jg), ("stream TTFB", sd, sg)):
            print(
                f"  {label:12s} direct p50 {pct(d, 50):6.2f} ms p99 {pct(d, 99):6.2f} ms | via gateway p50 "
                f"{pct(g, 50):6.2f} ms p99 {pct(g, 99):6.2f} ms | added p50 {pct(g, 50) - pct(d, 50):5.2f} ms "
                f"p99 {pct(g, 99) - pct(d, 99):5.2f} ms"
            )
        cpu0, _, _ = proc_stats(gateway.pid)
        ok, errors, secs = await concurrent_streams(via, gw_headers, args.streams, args.rounds)
        cpu1, rss, peak = proc_stats(gateway.pid)
        total = ok + errors
        print(
            f"  {args.streams} concurrent streams x {args.rounds}: {ok}/{total} ok, {errors} errors, "
            f"{secs:.2f} s ({total / secs:.0f} streams/s); gateway CPU {cpu1 - cpu0:.2f} s "
            f"({(cpu1 - cpu0) / secs * 100:.0f}% of one core), RSS {rss / 1024:.0f} MiB (peak {peak / 1024:.0f} MiB)"
        )
        bench = assemble.open_town(load_settings(town, env={}))
        metered = bench.usage(operator())
        bench.close()
        rows, out = sum(u.requests for u in metered), sum(u.output_tokens for u in metered)
        print(f"  metered rows {rows}, output tokens {out}; median JSON {statistics.median(jg):.2f} ms")
    finally:
        for p in (gateway, standin):
            p.terminate()
            p.wait(timeout=10)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-gateway":
        serve_gateway(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-budget", dest="budget", action="store_false", help="skip reserve/settle budgets")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
