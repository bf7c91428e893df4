"""The MCP claim + complete loop against the SDK's own floor, the server in a process of its own.

The floor is a minimal `MCPServer` whose `bead_claim`/`bead_complete` tools work on a dict, served the same way
(uvicorn, streamable HTTP) and driven by the same client code; the town is the real thing (bearer token per
agent, role checks, leases, nudges, SQLite with the journal fsynced before each reply). For each client count,
`--rounds` paired runs alternate which server goes first; each run is `--seconds` of clients looping
`bead_claim()` then `bead_complete(id)`. Clients run in up to 4 processes of their own (the MCP client costs
more CPU per call than either server). Reported: calls/s for each, their ratio (town / floor; median and range
over the pairs) and server CPU per call (from /proc, the server process only). The town's event log is read
back afterwards: every bead claimed once (0 double claims).

Run: .venv/bin/python benchmarks/bench_claims_mcp.py [--clients 1 8 32] [--rounds 3] [--seconds 5] [--no-durable]
[--before DIR]. `--before DIR` adds the town served from another copy of the source (e.g. `git archive HEAD~3 | tar
-x -C DIR`) to every round: before and after under the same load.
Writes benchmarks/results/bench_claims_mcp.json (`_no_durable.json` with --no-durable: the journal is written but
not fsynced before each reply, which shows what the fsync costs against the floor).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from _report import write_report
from pydantic import BaseModel

HERE = Path(__file__).resolve()


# -- the two servers (run as `--serve floor|town DIR` in a process of their own) ---------------------------------
class Claimed(BaseModel):
    id: str
    title: str
    status: str
    assignee: str | None = None


def floor_app(beads: int) -> Any:
    from mcp.server.mcpserver import MCPServer

    open_ids = [f"gt-{i:06d}" for i in range(beads)]
    open_ids.reverse()
    held: dict[str, dict[str, str]] = {}
    mcp = MCPServer("floor", log_level="WARNING")

    @mcp.tool(description="Claim the top ready bead.")
    async def bead_claim(id: str = "") -> Claimed:
        bead_id = id or open_ids.pop()
        held[bead_id] = {"title": f"bead {bead_id}", "status": "in_progress"}
        return Claimed(id=bead_id, title=held[bead_id]["title"], status="in_progress", assignee="x")

    @mcp.tool(description="Complete a claimed bead.")
    async def bead_complete(id: str, summary: str) -> Claimed:
        bead = held.pop(id)
        return Claimed(id=id, title=bead["title"], status="done")

    return mcp.streamable_http_app(host="127.0.0.1")


def town_app(town_dir: Path, beads: int, agents: int, info: dict[str, Any], durable: bool) -> Any:
    from gastown_mcp.assemble import open_town
    from gastown_mcp.config import Settings
    from gastown_mcp.models import now_iso
    from gastown_mcp.server import http_app
    from gastown_mcp.town import operator

    town = open_town(Settings.model_validate({"town_dir": town_dir, "dogs": {"durable": durable}}))
    store = town._store  # seeding 10k beads one MCP call at a time would take longer than the runs
    base = time.time() - beads
    with store.db.write() as tx:
        tx.conn.executemany(
            "INSERT INTO beads (id, title, priority, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            ((f"gt-{i:06d}", f"bead {i}", i % 5, "mayor", now_iso(base + i), now_iso(base + i)) for i in range(beads)),
        )
    try:
        from gastown_mcp.store.counts import recount
    except ImportError:  # a town from before maintained counts (comparing against an older checkout)
        pass
    else:
        with store.db.write() as tx:
            recount(tx.conn)
    op = operator()
    info["tokens"] = [town.agent_add(op, f"claimer-{i}", "refinery").token for i in range(agents)]
    return http_app(town, "127.0.0.1", info["port"])


def serve(kind: str, town_dir: Path, beads: int, agents: int, durable: bool = True) -> None:
    from gastown_mcp import serving

    sock = serving.bind("127.0.0.1")
    info: dict[str, Any] = {"port": sock.getsockname()[1], "tokens": [None] * agents}
    app = floor_app(beads) if kind == "floor" else town_app(town_dir, beads, agents, info, durable)
    server = serving.make_server(app, lifespan="on")
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    (town_dir / "ready.json").write_text(json.dumps(info))
    server.run(sockets=[sock])


# -- clients ---------------------------------------------------------------------------------------------------
def client_process(url: str, tokens: list[str | None], go: Any, stop_at: Any, out: Any) -> None:
    from gastown_mcp.server.client import connect_http, result_text

    async def one(token: str | None, ready: list[int], counts: list[int], errors: list[str]) -> None:
        async with connect_http(url, token) as client:
            await client.list_tools()
            ready.append(1)
            while not go.is_set():
                await anyio.sleep(0.005)
            while time.time() < stop_at.value:
                claimed = await client.call_tool("bead_claim", {})
                if claimed.is_error:
                    errors.append(result_text(claimed)[:120])
                    return
                bead_id = (claimed.structured_content or {})["id"]
                done = await client.call_tool("bead_complete", {"id": bead_id, "summary": "done"})
                if done.is_error:
                    errors.append(result_text(done)[:120])
                    return
                counts[0] += 2

    async def main() -> None:
        ready: list[int] = []
        counts: list[int] = [0]
        errors: list[str] = []
        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(one, token, ready, counts, errors)
            with anyio.fail_after(60):
                while len(ready) < len(tokens):
                    await anyio.sleep(0.01)
            out.put(("ready", 0, []))
        out.put(("done", counts[0], errors))

    anyio.run(main)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(
    kind: str, clients: int, seconds: float, beads: int, durable: bool = True, before: str | None = None
) -> dict[str, Any]:
    """One run of `kind` (floor, town, or before: the town from the source in `before`)."""
    with tempfile.TemporaryDirectory(prefix=f"gastown-{kind}-") as tmp:
        town_dir = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(Path(before).resolve())} if kind == "before" and before else None
        cmd = [
            sys.executable,
            str(HERE),
            "--serve",
            "floor" if kind == "floor" else "town",
            "--dir",
            tmp,
            "--beads",
            str(beads),
            "--agents",
            str(clients),
        ]
        proc = subprocess.Popen(cmd + ([] if durable else ["--no-durable"]), env=env)
        try:
            deadline = time.time() + 60
            while not (town_dir / "ready.json").exists():
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the {kind} server did not start")
                time.sleep(0.02)
            time.sleep(0.2)
            info = json.loads((town_dir / "ready.json").read_text())
            url = f"http://127.0.0.1:{info['port']}/mcp"
            ctx = mp.get_context("spawn")
            go, stop_at, out = ctx.Event(), ctx.Value("d", 0.0), ctx.Queue()
            procs = min(clients, 4)
            workers = [
                ctx.Process(target=client_process, args=(url, info["tokens"][i::procs], go, stop_at, out))
                for i in range(procs)
            ]
            for w in workers:
                w.start()
            for _ in workers:
                out.get(timeout=120)  # every client connected
            cpu0, began = cpu_seconds(proc.pid), time.time()
            stop_at.value = began + seconds
            go.set()
            calls, errors = 0, []
            for _ in workers:
                _, n, errs = out.get(timeout=seconds + 120)
                calls += n
                errors += errs
            elapsed, cpu = time.time() - began, cpu_seconds(proc.pid) - cpu0
            for w in workers:
                w.join(30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        double = None
        if kind != "floor":
            from gastown_mcp.config import Settings
            from gastown_mcp.store import Store

            store = Store(Settings(town_dir=town_dir))
            claims = Counter(r[0] for r in store.db.query("SELECT bead_id FROM events WHERE verb='bead.claimed'"))
            double = sum(1 for n in claims.values() if n > 1)
            store.close()
        return {
            "server": kind,
            "clients": clients,
            "calls": calls,
            "seconds": round(elapsed, 3),
            "calls_per_second": round(calls / elapsed, 1),
            "server_cpu_ms_per_call": round(cpu * 1000 / max(1, calls), 3),
            "double_claims": double,
            "errors": errors[:3],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--beads", type=int, default=20_000)
    parser.add_argument("--serve", choices=["floor", "town"], help=argparse.SUPPRESS)
    parser.add_argument("--before", help="also serve the town from this copy of an earlier source")
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--agents", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-durable", action="store_true", help="the town skips the journal's fdatasync before each reply"
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.dir), args.beads, args.agents, not args.no_durable)
        return
    sync = "not fsynced (--no-durable)" if args.no_durable else "fsynced before each reply"
    print(f"claim + complete over MCP HTTP, server in its own process, {args.seconds:.0f} s per run, journal {sync}")
    results = []
    for clients in args.clients:
        pairs = []
        kinds = ["floor", "town"] + (["before"] if args.before else [])
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            runs = {k: one_run(k, clients, args.seconds, args.beads, not args.no_durable, args.before) for k in order}
            pairs.append(runs)
            ratio = runs["town"]["calls_per_second"] / runs["floor"]["calls_per_second"]
            was = ""
            if args.before:
                b = runs["before"]
                was = (
                    f"; before: ratio {b['calls_per_second'] / runs['floor']['calls_per_second']:.2f}, "
                    f"{b['server_cpu_ms_per_call']:.2f} ms CPU/call"
                )
            print(
                f"{clients:>3} clients, round {r + 1}: town {runs['town']['calls_per_second']:7.1f} calls/s "
                f"({runs['town']['server_cpu_ms_per_call']:.2f} ms CPU/call), floor "
                f"{runs['floor']['calls_per_second']:7.1f} calls/s ({runs['floor']['server_cpu_ms_per_call']:.2f} "
                f"ms CPU/call), ratio {ratio:.2f}, double claims {runs['town']['double_claims']}{was}"
                + (f", errors {runs['town']['errors'] or runs['floor']['errors']}" if runs["town"]["errors"] else "")
            )
        ratios = sorted(p["town"]["calls_per_second"] / p["floor"]["calls_per_second"] for p in pairs)
        cpu = [p["town"]["server_cpu_ms_per_call"] for p in pairs]
        floor_cpu = [p["floor"]["server_cpu_ms_per_call"] for p in pairs]
        if args.before:
            b_ratios = sorted(p["before"]["calls_per_second"] / p["floor"]["calls_per_second"] for p in pairs)
            b_cpu = statistics.median(p["before"]["server_cpu_ms_per_call"] for p in pairs)
        summary = {
            "clients": clients,
            "ratio_median": round(statistics.median(ratios), 2),
            "ratio_range": [round(ratios[0], 2), round(ratios[-1], 2)],
            "town_cpu_ms_per_call_median": round(statistics.median(cpu), 3),
            "floor_cpu_ms_per_call_median": round(statistics.median(floor_cpu), 3),
            "double_claims": sum(p["town"]["double_claims"] or 0 for p in pairs),
            "pairs": pairs,
        }
        if args.before:
            summary["before_ratio_median"] = round(statistics.median(b_ratios), 2)
            summary["before_ratio_range"] = [round(b_ratios[0], 2), round(b_ratios[-1], 2)]
            summary["before_cpu_ms_per_call_median"] = round(b_cpu, 3)
        results.append(summary)
        print(
            f"{clients:>3} clients: ratio {summary['ratio_median']:.2f} [{ratios[0]:.2f}..{ratios[-1]:.2f}], server "
            f"CPU per call town {summary['town_cpu_ms_per_call_median']:.2f} ms, floor "
            f"{summary['floor_cpu_ms_per_call_median']:.2f} ms, double claims {summary['double_claims']}"
            + (
                f"; before: ratio {summary['before_ratio_median']:.2f} [{b_ratios[0]:.2f}..{b_ratios[-1]:.2f}], "
                f"{summary['before_cpu_ms_per_call_median']:.2f} ms"
                if args.before
                else ""
            )
        )
    write_report(
        "bench_claims_mcp",
        results,
        params=vars(args),
        file="bench_claims_mcp" + ("_no_durable" if args.no_durable else ""),
    )


if __name__ == "__main__":
    main()
