"""A real local model through the gateway vs direct: time to first token and tokens/s, in the same run.

Run: `.venv/bin/python benchmarks/bench_local_model.py [--rounds 12] [--max-tokens 64] [--threads 1]` (needs
`make localmodel`). llama.cpp's server with SmolLM2-135M on 127.0.0.1; the gateway (its own process, a scratch
town, a route sending the model there, the key from a key file) in front of it. Each round sends one streamed
request straight to the server and one through the gateway, in alternating order, each with a prompt of its
own (so neither rides on the other's prompt cache). Time to first token = request sent to the first text
delta; tokens/s = (output tokens - 1) / (last delta - first delta), the decode rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report

from gastown_mcp.errors import NotFound
from gastown_mcp.gateway import localmodel
from gastown_mcp.serving import bind

MODEL = localmodel.DEFAULT_ALIAS


def free_port() -> int:
    sock = bind()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def serve_gateway(town_dir: str, port: int, local_url: str, durable: bool) -> None:
    """Child process: a scratch town whose gateway routes MODEL to the local server, keyed by its key file."""
    from gastown_mcp import assemble, serving
    from gastown_mcp.config import load_settings
    from gastown_mcp.gateway import build_gateway
    from gastown_mcp.town import operator

    upstreams = {"local": {"base_url": local_url, "key_file": "local.key", "auth": "bearer"}}
    env = {"GASTOWN_GATEWAY__UPSTREAMS": json.dumps(upstreams), "GASTOWN_DOGS__DURABLE": str(durable).lower()}
    settings = load_settings(town_dir, env=env)
    town = assemble.open_town(settings)
    town.route_add(operator(), "local", model=f"{MODEL}*")
    app = build_gateway(town, assemble.provider_env(settings, {}))
    serving.run(app, "127.0.0.1", port)


def one_stream(http: httpx2.Client, url: str, key: str, prompt: str, max_tokens: int) -> dict[str, float]:
    try:
        return _timed_stream(http, url, key, prompt, max_tokens)
    except httpx2.RemoteProtocolError:  # a kept-alive connection the server closed as we reused it: once more
        return _timed_stream(http, url, key, prompt, max_tokens)


def _timed_stream(http: httpx2.Client, url: str, key: str, prompt: str, max_tokens: int) -> dict[str, float]:
    body = {
        "model": MODEL,
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 0.0,
        "messages": [{"role": "user", "content": prompt}],
    }
    t0 = time.perf_counter()
    first = last = 0.0
    output = 0
    with http.stream("POST", url + "/v1/messages", json=body, headers={"x-api-key": key}) as r:
        if r.status_code != 200:
            raise SystemExit(f"{url}: HTTP {r.status_code} {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = json.loads(line[5:])
            if data.get("type") == "content_block_delta":
                last = time.perf_counter()
                first = first or last
            elif data.get("type") == "message_delta":
                output = int(data.get("usage", {}).get("output_tokens", 0))
    rate = (output - 1) / (last - first) if output > 1 and last > first else 0.0
    return {"ttft_ms": (first - t0) * 1000, "tokens_per_s": rate, "output_tokens": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-durable", action="store_true", help="the gateway's town skips the journal fsync ([dogs] durable = false)"
    )
    parser.add_argument(
        "--serve-gateway", nargs=4, metavar=("TOWN", "PORT", "LOCAL_URL", "DURABLE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_gateway:
        town_dir, port, local_url, durable = args.serve_gateway
        serve_gateway(town_dir, int(port), local_url, durable == "1")
        return

    try:
        server, model = localmodel.locate()
    except NotFound as exc:
        raise SystemExit(f"cannot run: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        town_dir = Path(tmp) / "town"
        town_dir.mkdir()
        spec = localmodel.LocalModel(server, model, town_dir / "local.key", port=free_port(), threads=args.threads)
        local_key = localmodel.ensure_key(spec.key_file)
        model_proc = localmodel.start(spec, Path(tmp) / "server.log")
        gw_port = free_port()
        gateway = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-gateway",
                str(town_dir),
                str(gw_port),
                spec.url,
                "0" if args.no_durable else "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            localmodel.wait_ready(spec, model_proc, timeout=120)
            results = run_rounds(args, spec, local_key, town_dir, gw_port, gateway)
        finally:
            gateway.terminate()
            gateway.wait(10)
            localmodel.stop(model_proc)
    report(args, results)


def run_rounds(
    args: argparse.Namespace,
    spec: localmodel.LocalModel,
    local_key: str,
    town_dir: Path,
    gw_port: int,
    gateway: subprocess.Popen[bytes],
) -> dict[str, list[dict[str, float]]]:
    from gastown_mcp import assemble
    from gastown_mcp.config import load_settings
    from gastown_mcp.models import Role
    from gastown_mcp.town import operator

    gw_url = f"http://127.0.0.1:{gw_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx2.get(gw_url + "/healthz", timeout=2, trust_env=False)
            break
        except httpx2.TransportError:
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the gateway did not come up") from None
            time.sleep(0.1)
    town = assemble.open_town(load_settings(town_dir))
    agent_key = town.agent_add(operator(), "polecat-bench", Role.polecat.value).gateway_key
    town.close()
    paths = {"direct": (spec.url, local_key), "gateway": (gw_url, agent_key)}
    out: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
    with httpx2.Client(timeout=120, trust_env=False) as http:
        one_stream(http, spec.url, local_key, "Warm up.", 8)
        for i in range(args.rounds):
            order = ["direct", "gateway"] if i % 2 == 0 else ["gateway", "direct"]
            for name in order:
                url, key = paths[name]
                prompt = f"Request {i}-{name}: write a short story about a lighthouse keeper."
                out[name].append(one_stream(http, url, key, prompt, args.max_tokens))
    return out


def report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "ttft_ms_p50": round(statistics.median(r["ttft_ms"] for r in runs), 1),
            "ttft_ms_max": round(max(r["ttft_ms"] for r in runs), 1),
            "tokens_per_s_p50": round(statistics.median(r["tokens_per_s"] for r in runs), 1),
            "output_tokens_p50": statistics.median(r["output_tokens"] for r in runs),
        }
    d, g = summary["direct"], summary["gateway"]
    summary["gateway_vs_direct"] = {
        "ttft_added_ms_p50": round(g["ttft_ms_p50"] - d["ttft_ms_p50"], 1),
        "ttft_ratio": round(g["ttft_ms_p50"] / d["ttft_ms_p50"], 3) if d["ttft_ms_p50"] else None,
        "tokens_per_s_ratio": round(g["tokens_per_s_p50"] / d["tokens_per_s_p50"], 3)
        if d["tokens_per_s_p50"]
        else None,
    }
    durable = "journal not fsynced" if args.no_durable else "journal fsynced (default)"
    print(f"SmolLM2-135M on llama.cpp, {args.threads} thread(s), {args.rounds} rounds, max_tokens {args.max_tokens}")
    print(f"gateway: {durable}")
    print(f"{'path':<10}{'TTFT p50 ms':>14}{'TTFT max ms':>14}{'tokens/s p50':>15}")
    for name in ("direct", "gateway"):
        s = summary[name]
        print(f"{name:<10}{s['ttft_ms_p50']:>14}{s['ttft_ms_max']:>14}{s['tokens_per_s_p50']:>15}")
    print("gateway vs direct:", summary["gateway_vs_direct"])
    write_report(
        "local model through the gateway vs direct",
        {"summary": summary, "runs": results},
        file="local_model_no_durable" if args.no_durable else "local_model",
        gateway_durable=not args.no_durable,
    )


if __name__ == "__main__":
    main()
