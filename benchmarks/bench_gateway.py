"""Gateway overhead against the stack's floor: added latency of our gateway and of a bare pass-through proxy
on the same stack (uvicorn + httpx2, `serving.run`), same run, interleaved; CPU per request of both; then 50
concurrent streams through the gateway.

Run: `.venv/bin/python benchmarks/bench_gateway.py [--requests 400] [--streams 50] [--rounds 10] [--before DIR]
[--unmetered]`.
The stand-in, the bare proxy and the gateway each run as their own uvicorn subprocess (CPU read from /proc); all
traffic is on loopback. "Added" is p50 through a proxy minus p50 straight to the stand-in; the ratio is the
gateway's added latency (and CPU per request) over the bare proxy's. `--before DIR` adds a gateway served from
another copy of the source (e.g. `git archive HEAD~3 | tar -x -C DIR`), with a town of its own, to the same
interleaved run: before and after under the same load. `--unmetered` adds the gateway with its two store writes
taken out (never a way to run it: a bound on what metering leaves to gain). Writes
benchmarks/results/bench_gateway.json.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "scripted-standin", "max_tokens": 256, "messages": [{"role": "user", "content": "benchmark " * 40}]}
HOP = frozenset({b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_gateway(town_dir: str, port: int, upstream: str, unmetered: bool = False) -> None:
    """Child process: one town store, one gateway app, uvicorn (from the source on PYTHONPATH with `--before`).
    `unmetered`: a measuring instrument, never a gateway to run: the same app with its two store writes taken
    out (the reservation made in memory, the usage row built and dropped), to show what the rest costs."""
    from gastown_mcp import assemble, serving
    from gastown_mcp.config import load_settings
    from gastown_mcp.gateway import build_gateway

    if unmetered:
        from gastown_mcp.gateway import app as proxy_module
        from gastown_mcp.town.budgets import Reservation

        async def no_write(self: Any, write: Any) -> Any:
            if write.func.__name__ == "_reserve":
                agent, model, estimate = write.args
                return Reservation(id=None, agent=agent.name, rig=agent.rig, model=model, tokens=estimate.tokens,
                                   usd=estimate.usd)  # fmt: skip
            return self.budgets.usage_row(*write.args, **write.keywords)

        proxy_module.MessagesProxy._write = no_write  # type: ignore[method-assign]  # this child only

    env = {"GASTOWN_GATEWAY__UPSTREAMS": json.dumps({"standin": {"base_url": upstream}})}
    settings = load_settings(town_dir, env={**env, "GASTOWN_GATEWAY__DEFAULT_UPSTREAM": "standin"})
    app = build_gateway(assemble.open_town(settings), {"ANTHROPIC_API_KEY": "sk-bench-provider-key"})
    serving.run(app, "127.0.0.1", port)


def serve_bare(port: int, upstream: str) -> None:
    """Child process: the floor. A pass-through proxy on the same stack (uvicorn via `serving.run`, one pooled
    httpx2 client): read the body, forward it, stream the answer back; no keys, policy, budgets or metering."""
    from gastown_mcp import serving

    client = httpx2.AsyncClient(timeout=60, trust_env=False)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP]
        request = client.build_request("POST", upstream + scope["path"], headers=headers, content=b"".join(chunks))
        response = await client.send(request, stream=True)
        try:
            out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

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


async def json_once(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = await http.post(url + "/v1/messages", json=BODY, headers=headers)
    ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200, r.text
    return ms


async def ttfb_once(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    ms = -1.0
    async with http.stream("POST", url + "/v1/messages", json={**BODY, "stream": True}, headers=headers) as r:
        async for _chunk in r.aiter_raw():
            if ms < 0:
                ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200 and ms >= 0
    return ms


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> tuple[int, int]:
    """(RSS KiB, peak RSS KiB) of a process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


Probe = Callable[[httpx2.AsyncClient, str, dict[str, str]], Awaitable[float]]


async def interleaved(
    http: httpx2.AsyncClient, targets: dict[str, tuple[str, dict[str, str], int | None]], probe: Probe, n: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """`n` requests to each target, in blocks of 10 whose order rotates, so load drifts hit all alike. Returns
    the times per target and each proxy process's CPU seconds spent over its requests."""
    times: dict[str, list[float]] = {name: [] for name in targets}
    cpu = dict.fromkeys(targets, 0.0)
    names = list(targets)
    for block in range(0, n, 10):
        order = names[block // 10 % len(names) :] + names[: block // 10 % len(names)]
        for name in order:
            url, headers, pid = targets[name]
            c0 = cpu_seconds(pid) if pid else 0.0
            for _ in range(min(10, n - block)):
                times[name].append(await probe(http, url, headers))
            cpu[name] += (cpu_seconds(pid) - c0) if pid else 0.0
    return times, cpu


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
    from _report import write_report

    from gastown_mcp import assemble
    from gastown_mcp.config import load_settings
    from gastown_mcp.town import operator

    def new_town(env: dict[str, str] | None = None) -> tuple[str, str]:
        """A town made by the code that will serve it (`env`: the earlier source's), in a process of its own."""
        where = tempfile.mkdtemp(prefix="bench-town-")
        atexit.register(shutil.rmtree, where, ignore_errors=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--make-town", where, "1" if args.budget else "0"]
        made_key = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
        return where, made_key

    town, key = new_town()
    sp, bp, gp = free_port(), free_port(), free_port()
    py, me = sys.executable, str(Path(__file__).resolve())
    upstream = f"http://127.0.0.1:{sp}"
    standin = subprocess.Popen([py, "-m", "gastown_mcp.standin", "--port", str(sp), "--script", "hello"], cwd=ROOT)
    bare = subprocess.Popen([py, me, "--serve-bare", str(bp), upstream], cwd=ROOT)
    gateway = subprocess.Popen([py, me, "--serve-gateway", town, str(gp), upstream], cwd=ROOT)
    gw_headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    targets: dict[str, tuple[str, dict[str, str], int | None]] = {
        "direct": (upstream, {}, None),
        "bare": (f"http://127.0.0.1:{bp}", {"anthropic-version": "2023-06-01"}, bare.pid),
        "gateway": (f"http://127.0.0.1:{gp}", gw_headers, gateway.pid),
    }
    children = [gateway, bare, standin]
    if args.unmetered:
        (up_town, up_key), up_port = new_town(), free_port()
        unmetered = subprocess.Popen([py, me, "--serve-unmetered", up_town, str(up_port), upstream], cwd=ROOT)
        children.insert(0, unmetered)
        up_headers = {"x-api-key": up_key, "anthropic-version": "2023-06-01"}
        targets["unmetered"] = (f"http://127.0.0.1:{up_port}", up_headers, unmetered.pid)
    if args.before:
        fp, env = free_port(), {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())}
        before_town, before_key = new_town(env)
        before = subprocess.Popen([py, me, "--serve-gateway", before_town, str(fp), upstream], cwd=ROOT, env=env)
        children.insert(0, before)
        before_headers = {"x-api-key": before_key, "anthropic-version": "2023-06-01"}
        targets["before"] = (f"http://127.0.0.1:{fp}", before_headers, before.pid)
    proxies = [name for name in targets if name != "direct"]
    try:
        for url, _, _ in targets.values():
            await wait_up(url)
        results: dict[str, Any] = {}
        async with httpx2.AsyncClient(timeout=30) as http:
            await interleaved(http, targets, json_once, 60)  # warm-up
            for label, probe in (("json", json_once), ("ttfb", ttfb_once)):
                times, cpu = await interleaved(http, targets, probe, args.requests)
                p50 = {name: pct(t, 50) for name, t in times.items()}
                added = {name: p50[name] - p50["direct"] for name in proxies}
                per_req = {name: cpu[name] / args.requests * 1000 for name in proxies}
                results[label] = {
                    "p50_ms": p50,
                    "p99_ms": {name: pct(t, 99) for name, t in times.items()},
                    "added_p50_ms": added,
                    "added_ratio": added["gateway"] / added["bare"] if added["bare"] > 0 else None,
                    "cpu_ms_per_request": per_req,
                    "cpu_ratio": per_req["gateway"] / per_req["bare"] if per_req["bare"] > 0 else None,
                }
                if "unmetered" in targets:
                    results[label]["unmetered_added_ratio"] = (
                        added["unmetered"] / added["bare"] if added["bare"] > 0 else None
                    )
                    results[label]["unmetered_cpu_ratio"] = (
                        per_req["unmetered"] / per_req["bare"] if per_req["bare"] else None
                    )
                if "before" in targets:
                    results[label]["before_added_ratio"] = (
                        added["before"] / added["bare"] if added["bare"] > 0 else None
                    )
                    results[label]["before_cpu_ratio"] = (
                        per_req["before"] / per_req["bare"] if per_req["bare"] else None
                    )
        budget = "on" if args.budget else "off"
        print(f"gateway vs a bare pass-through proxy, same stack: {args.requests} requests each, budgets {budget}")
        for label, name in (("json", "JSON total"), ("ttfb", "stream TTFB")):
            r = results[label]
            ratio, cratio = r["added_ratio"], r["cpu_ratio"]
            added, cpu = r["added_p50_ms"], r["cpu_ms_per_request"]
            print(
                f"  {name:12s} p50 direct {r['p50_ms']['direct']:5.2f} ms | added: bare +{added['bare']:.2f} ms, "
                f"gateway +{added['gateway']:.2f} ms (x{ratio or float('nan'):.2f}) | CPU per request: bare "
                f"{cpu['bare']:.2f} ms, gateway {cpu['gateway']:.2f} ms (x{cratio or float('nan'):.2f})"
            )
            if "unmetered" in targets:
                print(
                    f"  {'':12s} unmetered (--unmetered): added +{added['unmetered']:.2f} ms "
                    f"(x{r['unmetered_added_ratio'] or float('nan'):.2f}), CPU per request {cpu['unmetered']:.2f} ms "
                    f"(x{r['unmetered_cpu_ratio'] or float('nan'):.2f})"
                )
            if "before" in targets:
                print(
                    f"  {'':12s} before (--before): added +{added['before']:.2f} ms "
                    f"(x{r['before_added_ratio'] or float('nan'):.2f}), CPU per request {cpu['before']:.2f} ms "
                    f"(x{r['before_cpu_ratio'] or float('nan'):.2f})"
                )
        cpu0 = cpu_seconds(gateway.pid)
        ok, errors, secs = await concurrent_streams(targets["gateway"][0], gw_headers, args.streams, args.rounds)
        cpu1 = cpu_seconds(gateway.pid)
        rss, peak = rss_kib(gateway.pid)
        total = ok + errors
        results["streams"] = {
            "streams": args.streams, "rounds": args.rounds, "ok": ok, "errors": errors, "seconds": secs,
            "cpu_seconds": cpu1 - cpu0, "rss_mib": rss / 1024, "peak_rss_mib": peak / 1024,
        }  # fmt: skip
        print(
            f"  {args.streams} concurrent streams x {args.rounds}: {ok}/{total} ok, {errors} errors, "
            f"{secs:.2f} s ({total / secs:.0f} streams/s); gateway CPU {cpu1 - cpu0:.2f} s "
            f"({(cpu1 - cpu0) / secs * 100:.0f}% of one core), RSS {rss / 1024:.0f} MiB (peak {peak / 1024:.0f} MiB)"
        )
        # Each usage row follows its response's last byte: give the last ones a moment before stopping.
        expected = 60 + 2 * args.requests + args.streams * args.rounds
        bench = assemble.open_town(load_settings(town, env={}))
        for _ in range(100):
            if sum(u.requests for u in bench.usage(operator())) >= expected:
                break
            await asyncio.sleep(0.1)
        bench.close()
    finally:
        for p in children:
            p.terminate()
            p.wait(timeout=10)
    bench = assemble.open_town(load_settings(town, env={}))
    metered = bench.usage(operator())
    [status] = bench.budget(operator(), "town") if args.budget else [None]
    bench.close()
    rows, out = sum(u.requests for u in metered), sum(u.output_tokens for u in metered)
    results["metered"] = {"rows": rows, "expected": expected, "output_tokens": out}
    print(f"  metered rows {rows} of {expected} requests sent, output tokens {out}", end="")
    print(f"; reserved afterwards {status.reserved_tokens}" if status is not None else "")
    write_report("bench_gateway", results, params=vars(args))
    if rows != expected or errors:
        raise SystemExit("FAILED: a stream failed or a request went unmetered")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] in ("--serve-gateway", "--serve-unmetered"):
        serve_gateway(sys.argv[2], int(sys.argv[3]), sys.argv[4], unmetered=sys.argv[1] == "--serve-unmetered")
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--make-town":
        from gastown_mcp import assemble
        from gastown_mcp.config import load_settings
        from gastown_mcp.town import operator

        made = assemble.open_town(load_settings(sys.argv[2], env={}))
        print(made.agent_add(operator(), "polecat-1", "polecat", rig="web").gateway_key)
        if sys.argv[3] == "1":
            made.budget_set(operator(), "town", tokens=10**12, usd=10**6)
        made.close()
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-budget", dest="budget", action="store_false", help="no budget rows (still reserves)")
    parser.add_argument("--before", help="a copy of earlier source to serve a second gateway from, same run")
    parser.add_argument(
        "--unmetered",
        action="store_true",
        help="add the same gateway with its two store writes taken out (a bound: what the rest of the path costs)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
