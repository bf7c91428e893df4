"""The town as a container (compose.yaml): start-up and graceful shutdown.

    .venv/bin/python benchmarks/bench_compose.py [--runs 3] [--agents 10]

Each run: a fresh town directory, `compose up -d`, and the time until the town's MCP endpoint answers (a
request without a token gets its 401); then N agent containers spawned through `compose exec town gastown
agent spawn` (each runs a sleeping program, standing in for a busy polecat), and the time `compose stop`
takes to stop them all gracefully and exit. Prints figures only. Needs root, a running engine, `docker
compose` or `docker-compose`, and the images (`make image`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.image import ImageConfig, build_images
from gastown_mcp.runtime.network import remove_town_network

ROOT = Path(__file__).resolve().parent.parent
SLEEPER = ["python3", "-c", "import time; time.sleep(3600)"]


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("neither `docker compose` nor `docker-compose` is installed: run scripts/install-docker.sh")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=1)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False
    return True


def one_run(compose: list[str], agents: int, runtime: DockerRuntime) -> tuple[float, float, int]:
    name = "bench" + os.urandom(3).hex()
    with tempfile.TemporaryDirectory(prefix="gastown-bench-compose-") as tmp:
        town_dir = Path(tmp) / name
        town_dir.mkdir()
        mcp_port, gw_port = free_ports(2)
        (town_dir / "town.toml").write_text(
            f'[town]\nname = "{name}"\nprefix = "bc"\n\n[server]\nport = {mcp_port}\n\n[gateway]\nport = {gw_port}\n'
        )
        env = {"PATH": os.environ["PATH"], "GASTOWN_TOWN_DIR": str(town_dir), "GASTOWN_NAME": name}

        def run(*args: str) -> None:
            cmd = [*compose, "-f", str(ROOT / "compose.yaml"), "-p", name, *args]
            subprocess.run(cmd, env=env, capture_output=True, check=True, timeout=300)

        try:
            started = time.perf_counter()
            run("up", "-d")
            while not answers(f"http://127.0.0.1:{mcp_port}/mcp"):
                if time.perf_counter() - started > 120:
                    raise SystemExit("the town container did not answer within 120 s")
                time.sleep(0.02)
            up = time.perf_counter() - started
            for _ in range(agents):
                run("exec", "-T", "town", "gastown", "agent", "spawn", "--role", "polecat", "--", *SLEEPER)
            running = len(runtime.list(name))
            started = time.perf_counter()
            run("stop", "--timeout", "120")
            stop = time.perf_counter() - started
            left = sum(1 for s in runtime.list(name) if s.state == "running")
            if left:
                raise SystemExit(f"{left} agent containers still running after `compose stop`")
            return up, stop, running
        finally:
            run("down", "--timeout", "60")
            runtime.cleanup(name)
            remove_town_network(runtime.client, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--agents", type=int, default=10)
    args = parser.parse_args()
    runtime = DockerRuntime.connect()
    build_images(runtime.client, ImageConfig(), progress=lambda _line: None, town=True)
    compose = compose_command()
    ups, stops = [], []
    for i in range(args.runs):
        up, stop, running = one_run(compose, args.agents, runtime)
        ups.append(up)
        stops.append(stop)
        print(f"run {i + 1}: up {up:.2f} s; `compose stop` with {running} agent containers {stop:.2f} s")
    print(f"compose up -d to MCP answering: median {statistics.median(ups):.2f} s over {args.runs} runs")
    print(f"compose stop with {args.agents} agents, all stopped: median {statistics.median(stops):.2f} s")


if __name__ == "__main__":
    main()
