"""The budget overspend bound: rounds of 50 concurrent requests against a 20,000-token town budget until the
gateway answers 402, then how far the spend went over the limit. Then the bodies that used to slip past the
reservation (no, float, string or huge `max_tokens`) against a fresh budget: how many were forwarded and spent.

Run: `.venv/bin/python benchmarks/bench_overspend.py [--concurrency 50] [--limit 20000] [--runs 3]`. The
stand-in (echo script) and the gateway each run as their own uvicorn subprocess; all traffic is on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx2
from _report import write_report
from bench_gateway import free_port, wait_up

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = Path(__file__).with_name("bench_gateway.py")
MAX_ROUNDS = 200  # a bound on the loop: 200 rounds x 50 requests is far past any 20,000-token budget
BAD_MAX_TOKENS: dict[str, Any] = {"missing": None, "float": 1000.0, "string": "1000", "huge": 10**12}


def body(i: int, max_tokens: Any = 256, stream: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": "scripted-standin",
        "messages": [{"role": "user", "content": f"request {i} " + "pad " * 40}],
        "stream": stream,
    }
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    return out


def new_town(limit: int) -> tuple[str, str]:
    from gastown_mcp import assemble
    from gastown_mcp.config import load_settings
    from gastown_mcp.town import operator

    town_dir = tempfile.mkdtemp(prefix="bench-overspend-")
    atexit.register(shutil.rmtree, town_dir, ignore_errors=True)
    town = assemble.open_town(load_settings(town_dir, env={}))
    key = town.agent_add(operator(), "polecat-1", "polecat", rig="web").gateway_key
    town.budget_set(operator(), "town", tokens=limit)
    town.close()
    return town_dir, key


def spent(town_dir: str) -> tuple[int, int]:
    from gastown_mcp import assemble
    from gastown_mcp.config import load_settings
    from gastown_mcp.town import operator

    town = assemble.open_town(load_settings(town_dir, env={}))
    [status] = town.budget(operator(), "town")
    town.close()
    return status.tokens_spent, status.reserved_tokens


async def one(http: httpx2.AsyncClient, url: str, key: str, payload: dict[str, Any]) -> tuple[int, int]:
    """(status, reservation upper bound in tokens: body bytes + max_tokens)."""
    content = httpx2.Request("POST", url, json=payload).read()
    r = await http.post(url + "/v1/messages", content=content, headers={"x-api-key": key})
    if payload.get("stream"):
        await r.aread()
    mt = payload.get("max_tokens")
    return r.status_code, len(content) + (mt if isinstance(mt, int) else 0)


async def until_refused(url: str, key: str, n: int, stream: bool) -> tuple[dict[int, int], int, int]:
    statuses: dict[int, int] = {}
    largest = rounds = 0
    limits = httpx2.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx2.AsyncClient(limits=limits, timeout=60) as http:
        while 402 not in statuses and rounds < MAX_ROUNDS:
            rounds += 1
            results = await asyncio.gather(*(one(http, url, key, body(i, stream=stream)) for i in range(n)))
            for status, reserved in results:
                statuses[status] = statuses.get(status, 0) + 1
                largest = max(largest, reserved)
    return statuses, largest, rounds


async def scenario(args: argparse.Namespace, bad: str | None, stream: bool = False) -> dict[str, Any]:
    town_dir, key = new_town(args.limit)
    sp, gp = free_port(), free_port()
    py = sys.executable
    standin = subprocess.Popen([py, "-m", "gastown_mcp.standin", "--port", str(sp), "--script", "echo"], cwd=ROOT)
    gateway = subprocess.Popen([py, str(GATEWAY), "--serve-gateway", town_dir, str(gp), f"http://127.0.0.1:{sp}"])
    url = f"http://127.0.0.1:{gp}"
    try:
        await wait_up(f"http://127.0.0.1:{sp}")
        await wait_up(url)
        if bad is None:
            statuses, largest, rounds = await until_refused(url, key, args.concurrency, stream)
        else:
            async with httpx2.AsyncClient(timeout=60) as http:
                results = await asyncio.gather(
                    *(one(http, url, key, body(i, BAD_MAX_TOKENS[bad])) for i in range(args.concurrency))
                )
            statuses = {}
            for status, _ in results:
                statuses[status] = statuses.get(status, 0) + 1
            largest, rounds = 0, 1
    finally:
        for p in (gateway, standin):
            p.terminate()
            p.wait(timeout=10)
    tokens, reserved = spent(town_dir)
    return {
        "max_tokens": "256 (int)" if bad is None else bad,
        "stream": stream,
        "rounds": rounds,
        "statuses": statuses,
        "tokens_spent": tokens,
        "over_limit": tokens - args.limit,
        "largest_reservation": largest,
        "reserved_after": reserved,
    }


async def run(args: argparse.Namespace) -> None:
    results = []
    for _ in range(args.runs):
        for stream in (False, True):
            results.append(await scenario(args, None, stream))
    for bad in BAD_MAX_TOKENS:
        results.append(await scenario(args, bad))
    print(f"overspend: {args.concurrency} concurrent requests per round, town budget {args.limit:,} tokens")
    for r in results:
        print(
            f"  max_tokens {r['max_tokens']:10s} stream {r['stream']!s:5s} rounds {r['rounds']:3d} "
            f"statuses {r['statuses']} spent {r['tokens_spent']:,} over by {r['over_limit']:,} "
            f"(largest reservation {r['largest_reservation']:,}); reserved afterwards {r['reserved_after']}"
        )
    write_report("bench_overspend", results, params=vars(args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
