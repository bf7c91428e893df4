"""Agent container figures on this machine: launch-to-first-sign-of-life, and idle containers per host.

    .venv/bin/python benchmarks/bench_containers.py [--launches 20] [--idle 30]

1. p50/p90 of the time from `runtime.launch()` to the container's first HTTP request to a listener on the
   town network's gateway (the path an agent's first MCP call takes), over N sequential launches.
2. N idle agent containers (a sleeping Python process under the sandbox entrypoint) at once: memory each from
   the container's cgroup, and the host's MemAvailable drop per container (adds shim and kernel overhead).
   The "fit" figure extrapolates linearly from that drop; it ignores CPU, pids and Docker's own limits.
Needs root (firewall), a running engine, and the agent image (`python -m gastown_mcp.runtime.image`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.network import NetworkPolicy
from gastown_mcp.runtime.protocol import LaunchSpec, Limits

FIRST_CALL = "import os, urllib.request; urllib.request.urlopen(os.environ['TOWN_URL'] + os.environ['GASTOWN_AGENT'])"
IDLE = "import time; time.sleep(3600)"


@contextlib.contextmanager
def recorder(host: str) -> Iterator[tuple[int, dict[str, float]]]:
    """An HTTP listener that records when each agent (the request path) first called."""
    seen: dict[str, float] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.setdefault(self.path.strip("/"), time.perf_counter())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cgroup_memory_mb(container_id: str) -> float:
    """Memory charged to the container (cgroup v1 or v2), minus page cache where the kernel says so."""
    for base in (Path("/sys/fs/cgroup/memory/docker"), Path("/sys/fs/cgroup/system.slice")):
        for directory in (base / container_id, base / f"docker-{container_id}.scope"):
            usage = directory / "memory.usage_in_bytes"
            if usage.exists():
                stats = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
                return (int(usage.read_text()) - int(stats.get("total_inactive_file", 0))) / 2**20
            current = directory / "memory.current"
            if current.exists():
                stats = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
                return (int(current.read_text()) - int(stats.get("inactive_file", 0))) / 2**20
    return float("nan")


def bench_launch(runtime: DockerRuntime, town: str, network: str, gateway: str, launches: int) -> None:
    latencies = []
    with recorder(gateway) as (port, seen):
        runtime.ensure_network(town, NetworkPolicy(allowed_host_ports=(port,)))
        for i in range(launches):
            agent = f"l{i}"
            started = time.perf_counter()
            runtime.launch(
                LaunchSpec(
                    town=town,
                    agent=agent,
                    role="polecat",
                    command=["python3", "-c", FIRST_CALL],
                    env={"TOWN_URL": f"http://{gateway}:{port}/"},
                    network=network,
                    limits=Limits(memory_mb=256, wallclock_s=60),
                )
            )
            while agent not in seen and time.perf_counter() - started < 30:
                time.sleep(0.002)
            latencies.append(seen.get(agent, float("nan")) - started)
            runtime.remove(town, agent)
    latencies.sort()
    p50, p90 = statistics.median(latencies), latencies[int(0.9 * (len(latencies) - 1))]
    print(
        f"launch -> first HTTP call to the town, {launches} launches: p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms"
    )


def bench_idle(runtime: DockerRuntime, town: str, network: str, count: int) -> None:
    before = mem_available_mb()
    ids = []
    started = time.perf_counter()
    for i in range(count):
        status = runtime.launch(
            LaunchSpec(
                town=town,
                agent=f"idle{i}",
                role="polecat",
                command=["python3", "-c", IDLE],
                network=network,
                limits=Limits(memory_mb=512, wallclock_s=600),
            )
        )
        ids.append(status.container_id)
    took = time.perf_counter() - started
    time.sleep(3)  # let the processes settle before reading memory
    per_container = [cgroup_memory_mb(cid) for cid in ids]
    after = mem_available_mb()
    host_each = (before - after) / count
    print(f"{count} idle agent containers launched in {took:.1f} s ({took / count * 1000:.0f} ms each)")
    print(
        f"memory per idle container: cgroup median {statistics.median(per_container):.1f} MiB; "
        f"host MemAvailable drop {host_each:.1f} MiB each (includes containerd-shim and kernel)"
    )
    fit = int(after / host_each) + count if host_each > 0 else 0
    print(
        f"MemAvailable now {after / 1024:.1f} GiB -> about {fit} idle containers would fit by memory "
        "(linear extrapolation from this run; a live Claude Code session needs ~100-160 MiB more each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--idle", type=int, default=30)
    args = parser.parse_args()
    runtime = DockerRuntime.connect()
    town = f"bench-{secrets.token_hex(3)}"
    try:
        net = runtime.ensure_network(town, NetworkPolicy())
        bench_launch(runtime, town, net.name, net.gateway, args.launches)
        bench_idle(runtime, town, net.name, args.idle)
    finally:
        runtime.cleanup(town)
        runtime.remove_network(town)


if __name__ == "__main__":
    main()
