"""Claims per second over MCP streamable HTTP with 1, 8 and 32 concurrent clients (distinct refinery agents),
and the double-claim count read back from the event log (must be 0).

Each client connects first (not timed), then all start together and loop `bead_claim()` until no bead is
ready. Run: .venv/bin/python benchmarks/bench_claims_http.py [--beads 600] [--clients 1 8 32]
Writes benchmarks/results/bench_claims_http.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from _report import write_report
from mcp import Client

from gastown_mcp.assemble import scratch_town as make_town
from gastown_mcp.models import Verb
from gastown_mcp.server.client import connect_http, result_text, serve_http
from gastown_mcp.town import operator


async def one_run(clients: int, beads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        town_dir = Path(tmp) / "town"
        town_dir.mkdir()
        town = make_town(town_dir, "bench")
        op = operator()
        for i in range(beads):
            town.bead_create(op, f"bead {i}", priority=i % 5)
        # Refinery agents: a polecat may hold only its one hooked bead, and this measures claims back to back.
        tokens = {f"claimer-{i}": town.agent_add(op, f"claimer-{i}", "refinery").token for i in range(clients)}
        claimed: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        go = anyio.Event()
        connected = 0
        all_connected = anyio.Event()

        async def polecat(name: str, token: str, url: str) -> None:
            nonlocal connected
            async with connect_http(url, token) as client:
                await client.list_tools()  # the first call fetches schemas; keep it out of the timing
                connected += 1
                if connected == clients:
                    all_connected.set()
                await go.wait()
                await loop(client, name)

        async def loop(client: Client, name: str) -> None:
            refusals = 0
            while refusals < 1000:  # bounded: a refusal that repeats is reported, not retried forever
                result = await client.call_tool("bead_claim", {})
                if result.is_error:
                    text = result_text(result)
                    if "no ready beads" in text:
                        return
                    refused[text.split(";")[0]] += 1
                    refusals += 1
                    continue
                claimed[name] += 1

        with serve_http(town) as url:
            async with anyio.create_task_group() as tg:
                for name, token in tokens.items():
                    tg.start_soon(polecat, name, token, url)
                with anyio.fail_after(120):
                    await all_connected.wait()
                start = time.perf_counter()
                go.set()
            elapsed = time.perf_counter() - start

        op = operator()
        per_bead = Counter(e.bead_id for e in town.events(op, limit=10_000_000) if e.verb == Verb.bead_claimed)
        double = sum(1 for n in per_bead.values() if n > 1)
        held = town.status(op).beads_by_status.get("in_progress", 0)
        town.close()
        total = sum(claimed.values())
        return {
            "clients": clients,
            "beads": beads,
            "claims": total,
            "seconds": round(elapsed, 3),
            "claims_per_second": round(total / elapsed, 1),
            "double_claims": double,
            "beads_claimed_in_events": len(per_bead),
            "beads_held_at_end": held,
            "lost": beads - len(per_bead),
            "conflicts": dict(refused),
            "claims_by_client_min_max": [min(claimed.values(), default=0), max(claimed.values(), default=0)],
        }


async def run(client_counts: list[int], beads: int) -> list[dict[str, Any]]:
    out = []
    for n in client_counts:
        r = await one_run(n, beads)
        out.append(r)
        print(
            f"{n:>3} clients: {r['claims']} claims in {r['seconds']:.2f} s = {r['claims_per_second']:7.1f} claims/s"
            f"   double-claims {r['double_claims']}   lost {r['lost']}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, default=600)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    print(f"bead_claim() over MCP HTTP until nothing is ready, {args.beads} beads per run")
    figures = anyio.run(run, args.clients, args.beads)
    write_report("bench_claims_http", figures, params=vars(args))


if __name__ == "__main__":
    main()
