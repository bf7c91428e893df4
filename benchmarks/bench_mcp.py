"""MCP tool round trip: p50/p99 of `bead_show` in-process, over stdio (a `gastown serve` subprocess) and over
streamable HTTP (uvicorn in-process, real `mcp.Client` with a bearer token).

Run: .venv/bin/python benchmarks/bench_mcp.py [--calls 500] [--beads 1000]
Writes benchmarks/results/bench_mcp.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from _report import write_report
from mcp import Client, StdioServerParameters

from gastown_mcp.assemble import scratch_town as make_town
from gastown_mcp.config import TOWN_FILE, default_town_toml
from gastown_mcp.server import build_server
from gastown_mcp.server.client import connect_http, serve_http
from gastown_mcp.town import Town, operator


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "calls": len(ms),
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "max_ms": round(ms[-1], 3),
    }


async def measure(client: Client, bead_id: str, calls: int, warmup: int) -> dict[str, float]:
    async def once() -> None:
        result = await client.call_tool("bead_show", {"id": bead_id})
        if result.is_error:
            raise RuntimeError(f"bead_show failed: {result.content}")

    for _ in range(warmup):
        await once()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def setup(town_dir: Path, beads: int) -> tuple[Town, str, str]:
    town_dir.mkdir(parents=True)
    (town_dir / TOWN_FILE).write_text(default_town_toml("bench", "gt"))
    town = make_town(town_dir, "bench")
    op = operator()
    token = town.agent_add(op, "mayor", "mayor").token
    ids = [town.bead_create(op, f"bead {i}", description="x" * 200, labels=["bench"]).id for i in range(beads)]
    return town, token, ids[len(ids) // 2]


async def run(calls: int, beads: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        town_dir = Path(tmp) / "town"
        town, token, bead_id = setup(town_dir, beads)
        out: dict[str, Any] = {}
        cases: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = []

        async def inproc(mode: str) -> dict[str, float]:
            async with Client(build_server(town, town.agent("mayor")), mode=mode) as c:  # type: ignore[arg-type]
                return await measure(c, bead_id, calls, warmup)

        async def stdio(mode: str) -> dict[str, float]:
            gastown = str(Path(sys.executable).with_name("gastown"))
            params = StdioServerParameters(command=gastown, args=["serve", "--town", str(town_dir), "--as", "mayor"])
            async with Client(params, mode=mode) as c:  # type: ignore[arg-type]
                return await measure(c, bead_id, calls, warmup)

        async def http(mode: str) -> dict[str, float]:
            with serve_http(town) as url:
                async with connect_http(url, token, mode=mode) as c:
                    return await measure(c, bead_id, calls, warmup)

        for mode in ("auto", "legacy"):
            cases += [
                (f"in_process_{mode}", lambda m=mode: inproc(m)),  # type: ignore[misc]
                (f"stdio_{mode}", lambda m=mode: stdio(m)),  # type: ignore[misc]
                (f"http_{mode}", lambda m=mode: http(m)),  # type: ignore[misc]
            ]
        for name, case in cases:
            out[name] = await case()
            r = out[name]
            print(f"{name:<18} p50 {r['p50_ms']:7.2f} ms   p90 {r['p90_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms")
        town.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--beads", type=int, default=1000)
    args = parser.parse_args()
    print(f"bead_show round trip, {args.calls} calls after {args.warmup} warm-up, {args.beads} beads in the town")
    figures = anyio.run(run, args.calls, args.beads, args.warmup)
    write_report("bench_mcp", figures, tool="bead_show", params=vars(args))


if __name__ == "__main__":
    main()
