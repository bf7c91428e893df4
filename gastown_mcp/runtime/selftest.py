"""Containment self-test (`gastown doctor --sandbox`): real containers prove the sandbox holds on this host.

It makes a throwaway town network whose only allowed host port is a tiny HTTP listener on the gateway IP, runs
`probe.py` in an agent container next to a peer agent, and runs a memory hog, a fork bomb and a sleeper
against small limits. Everything it creates is removed again. Needs root for the firewall rules.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gastown_mcp.errors import GastownError
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE, LaunchSpec, Limits, NetworkPolicy, Runtime, TownNetwork

PROBE_SOURCE = Path(__file__).with_name("probe.py")

MEMORY_HOG = """
chunks = []
for _ in range(64):
    chunks.append(bytearray(32 * 1024 * 1024))
print("allocated 2 GiB: the memory limit did not hold")
"""

FORK_BOMB = """
import os, signal, time
children = []
try:
    for _ in range(100000):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    outcome = "unlimited"
except OSError as exc:
    outcome = type(exc).__name__
for pid in children:
    os.kill(pid, signal.SIGKILL)
print(f"forks={len(children)} stopped_by={outcome}")
"""


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_listener(host: str, port: int = 0) -> Iterator[int]:
    """Serve 200 OK on host:port in a thread; yield the bound port."""
    server = http.server.ThreadingHTTPServer((host, port), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def host_addresses() -> list[str]:
    """This host's other IPv4 addresses (not loopback): agents must not reach them either."""
    found = set()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect(("192.0.2.1", 9))  # no packet is sent; this only asks the kernel for the source address
        found.add(udp.getsockname()[0])
    return sorted(a for a in found if not a.startswith("127."))


def run_selftest(runtime: Runtime, image: str = DEFAULT_IMAGE, timeout_s: float = 60) -> list[CheckResult]:
    """Run every containment check; return one result per check (never raises for a failed check)."""
    town = f"selftest-{secrets.token_hex(3)}"
    results: list[CheckResult] = []
    try:
        network = runtime.ensure_network(town, NetworkPolicy())
        with http_listener(network.gateway) as town_port, http_listener("0.0.0.0") as blocked_port:
            network = runtime.ensure_network(town, NetworkPolicy(allowed_host_ports=(town_port,)))
            results += _run_checks(runtime, image, town, network, town_port, blocked_port, timeout_s)
    except GastownError as exc:
        results.append(CheckResult("selftest_setup", False, str(exc)))
    finally:
        runtime.cleanup(town)
        with contextlib.suppress(GastownError):
            runtime.remove_network(town)
    return results


def _run_checks(
    runtime: Runtime,
    image: str,
    town: str,
    network: TownNetwork,
    town_port: int,
    blocked_port: int,
    timeout_s: float,
) -> list[CheckResult]:
    def spec(agent: str, command: list[str], limits: Limits | None = None, **env: str) -> LaunchSpec:
        return LaunchSpec(
            town=town,
            agent=agent,
            role="polecat",
            image=image,
            command=command,
            env=env,
            network=network.name,
            limits=limits or Limits(memory_mb=256, pids=128, wallclock_s=int(timeout_s)),
        )

    # The slow ones start first so they run while the probe does its work.
    runtime.launch(spec("hog", ["python3", "-c", MEMORY_HOG], Limits(memory_mb=64, wallclock_s=int(timeout_s))))
    runtime.launch(spec("bomb", ["python3", "-c", FORK_BOMB], Limits(pids=32, wallclock_s=int(timeout_s))))
    runtime.launch(spec("sleeper", ["sleep", "600"], Limits(wallclock_s=2)))
    peer = runtime.launch(spec("peer", ["python3", "-m", "http.server", "8080"]))
    peer_address = runtime.status(town, "peer").address or ""
    peer_ready = bool(peer_address) and wait_for_port(peer_address, 8080, 15)
    results = [CheckResult("peer_agent_listening", peer_ready, f"{peer.agent} at {peer_address}:8080 (from host)")]
    probe_cfg = {
        "gateway": network.gateway,
        "town_port": town_port,
        "blocked_ports": [blocked_port, 22, 2375],
        "other_host_addresses": host_addresses(),
        "peer": [peer_address, 8080] if peer_ready else None,
    }
    runtime.launch(spec("probe", ["python3", "-c", PROBE_SOURCE.read_text()], GASTOWN_PROBE=json.dumps(probe_cfg)))
    probe = runtime.wait(town, "probe", timeout_s)
    output = runtime.logs(town, "probe").strip().splitlines()
    try:
        results += [CheckResult(r["name"], r["passed"], r["detail"]) for r in json.loads(output[-1])]
    except (IndexError, ValueError, KeyError):
        results.append(CheckResult("probe_ran", False, f"probe {probe.reason}: {' '.join(output[-5:])}"))

    hog = runtime.wait(town, "hog", timeout_s)
    results.append(CheckResult("memory_hog_oom_killed", hog.reason == "oom", f"exit {hog.exit_code}, {hog.reason}"))
    runtime.wait(town, "bomb", timeout_s)
    bomb_out = runtime.logs(town, "bomb").strip()
    forks = int(bomb_out.split("forks=")[1].split()[0]) if "forks=" in bomb_out else -1
    results.append(
        CheckResult("fork_bomb_stopped_at_pids_limit", 0 <= forks < 32 and "unlimited" not in bomb_out, bomb_out)
    )
    sleeper = runtime.wait(town, "sleeper", timeout_s)
    took = (sleeper.finished_at or 0) - (sleeper.started_at or 0)
    results.append(
        CheckResult(
            "wallclock_limit_stops_sleeper",
            sleeper.reason == "wallclock" and took < 2 + 15,
            f"limit 2 s, stopped after {took:.1f} s, exit {sleeper.exit_code}, {sleeper.reason}",
        )
    )
    return results


def main() -> None:
    """`python -m gastown_mcp.runtime.selftest`: print the checks as a table; exit 1 if any failed."""
    from gastown_mcp.runtime import connect_runtime

    results = run_selftest(connect_runtime())
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<{width}}  {r.detail}")
    raise SystemExit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
