"""Containment self-test (`gastown doctor --sandbox`): real containers prove the sandbox holds on this host.

Owns the throwaway world the checks run in (a fenced town network, an "outside" namespace on this machine, peer
and limit-testing agents), runs `probe.py` in it, reads the town's firewall rules, and removes it all. Needs root.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gastown_mcp.errors import GastownError, RuntimeUnavailable
from gastown_mcp.runtime.docker_backend import NO_RESOLVER
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE, LaunchSpec, Limits, NetworkPolicy, Runtime, TownNetwork

PROBE_SOURCE = Path(__file__).with_name("probe.py")

# The self-test's "outside": a /30 from the RFC 2544 benchmark range, which is never routed on the internet.
# The host side of a veth pair takes the first address, a network namespace the second; the host's connected
# route for the /30 points at the veth, so nothing sent there can leave this machine.
OUTSIDE_RANGE = ipaddress.ip_network("198.18.0.0/15")
OUTSIDE_PORT = 443
NETNS_PREFIX = "gtst-"
HOST_LINK_PREFIX = "gtsth"
NS_LINK_PREFIX = "gtstn"
NETNS_NAME = re.compile(r"^gtst-([0-9a-f]{6})-(\d+)$")
ROOT_HINT = "the self-test needs root and iproute2 (`ip netns`): run `sudo gastown doctor --sandbox` on the host"

# Runs inside the outside namespace: answers every connection with the token it was given, and exits when
# the self-test closes its stdin (or dies), or after `lifetime` seconds at the latest.
OUTSIDE_LISTENER = """
import socket, sys, threading, time
address, port, token, lifetime = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
server = socket.create_server((address, port))
server.settimeout(0.2)
closed = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
print("ready", flush=True)
deadline = time.monotonic() + lifetime
while not closed.is_set() and time.monotonic() < deadline:
    try:
        conn, _ = server.accept()
    except OSError:
        continue
    with conn:
        conn.sendall(token + b"\\n")
"""

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


@dataclass(frozen=True)
class Outside:
    """A listener in a namespace the self-test created, at `address:port`, answering with `token`."""

    namespace: str
    host_link: str
    host_address: str
    address: str
    port: int
    token: str


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
    """Serve 200 OK on host:port in a thread (host "" is every local address); yield the bound port."""
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


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("ip") is None:
        raise RuntimeUnavailable(f"`ip` is not installed; {ROOT_HINT}")
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}; {ROOT_HINT}")
    return done


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _ip("-j", *args).stdout.strip()
    return list(json.loads(out)) if out else []


def host_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback, read from the kernel (nothing is sent): agents must not
    reach any of them except on the town port."""
    found = {
        str(info["local"])
        for link in _ip_json("-4", "addr", "show")
        for info in link.get("addr_info", [])
        if info.get("local")
    }
    return sorted((a for a in found if not ipaddress.ip_address(a).is_loopback), key=ipaddress.ip_address)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_outsides() -> list[str]:
    """Remove outside namespaces (and their host veths) whose self-test process is gone; return their names.

    Names carry the creating process's id, so a self-test running at the same time keeps its own."""
    removed = []
    live_tags = set()
    # Links first: a run makes its namespace before its veth, so every link listed here has a namespace that
    # the list below shows, and a run starting meanwhile never loses its link.
    host_links = [str(link.get("ifname", "")) for link in _ip_json("link", "show")]
    for entry in _ip_json("netns", "list"):
        name = str(entry.get("name", ""))
        if not name.startswith(NETNS_PREFIX):
            continue
        match = NETNS_NAME.match(name)
        if match and _pid_alive(int(match.group(2))):
            live_tags.add(match.group(1))
            continue
        tag = match.group(1) if match else ""
        _remove_outside(name, f"{HOST_LINK_PREFIX}{tag}" if tag else "")
        removed.append(name)
    for ifname in host_links:
        if ifname.startswith(HOST_LINK_PREFIX) and ifname[len(HOST_LINK_PREFIX) :] not in live_tags:
            _ip("link", "del", ifname, check=False)
            removed.append(ifname)
    return removed


def _remove_outside(namespace: str, host_link: str) -> None:
    """Best effort and idempotent: listeners in the namespace, the veth pair, then the namespace."""
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    if host_link:
        # Deleting one end removes both, at once, rather than when the kernel reaps the namespace.
        _ip("link", "del", host_link, check=False)
    _ip("netns", "del", namespace, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /30 in OUTSIDE_RANGE that overlaps no address or route this host has (other runs included)."""
    taken: list[ipaddress.IPv4Network] = []
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = str(route.get("dst", ""))
        with contextlib.suppress(ValueError):
            if dst and dst != "default":
                taken.append(ipaddress.IPv4Network(dst, strict=False))
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                taken.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    base = int(OUTSIDE_RANGE.network_address)
    slots = OUTSIDE_RANGE.num_addresses // 4
    for _ in range(64):
        candidate = ipaddress.IPv4Network((base + 4 * secrets.randbelow(slots), 30))
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeUnavailable(f"no free /30 left in {OUTSIDE_RANGE} for the self-test's outside namespace")


@contextlib.contextmanager
def outside_listener(ready_timeout_s: float = 10, lifetime_s: float = 900) -> Iterator[Outside]:
    """Create the self-test's outside: a namespace joined to the host by a veth pair, with a TCP listener
    inside it; yield where it listens. Everything is removed on exit, also on failure."""
    remove_stale_outsides()
    tag = secrets.token_hex(3)
    namespace = f"{NETNS_PREFIX}{tag}-{os.getpid()}"
    host_link, ns_link = f"{HOST_LINK_PREFIX}{tag}", f"{NS_LINK_PREFIX}{tag}"
    subnet = _free_subnet()
    host_address, address = str(subnet[1]), str(subnet[2])
    token = secrets.token_hex(8)
    listener: subprocess.Popen[str] | None = None
    try:
        _ip("netns", "add", namespace)
        _ip("link", "add", host_link, "type", "veth", "peer", "name", ns_link, "netns", namespace)
        _ip("addr", "add", f"{host_address}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", ns_link)
        _ip("-n", namespace, "link", "set", ns_link, "up")
        # A way back to the host, so that if containment failed an agent's connection would really succeed.
        _ip("-n", namespace, "route", "add", "default", "via", host_address)
        command = ["ip", "netns", "exec", namespace, sys.executable, "-c", OUTSIDE_LISTENER]
        listener = subprocess.Popen(
            [*command, address, str(OUTSIDE_PORT), token, str(lifetime_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None
        readable, _, _ = select.select([listener.stdout], [], [], ready_timeout_s)
        line = listener.stdout.readline().strip() if readable else ""
        if line != "ready":
            listener.kill()
            _, err = listener.communicate(timeout=5)
            listener = None
            raise RuntimeUnavailable(
                f"the outside listener in namespace {namespace} did not start within {ready_timeout_s:.0f} s: "
                f"{err.strip()[-500:] or 'no output'}; {ROOT_HINT}"
            )
        yield Outside(namespace, host_link, host_address, address, OUTSIDE_PORT, token)
    finally:
        if listener is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                listener.communicate(timeout=5)  # closes its stdin, which tells it to stop
            if listener.poll() is None:
                listener.kill()
                listener.wait(timeout=5)
        _remove_outside(namespace, host_link)


def outside_answers_host(outside: Outside, timeout_s: float = 3) -> CheckResult:
    """Prove from the host that the outside listener is real, so that an agent failing to reach it means
    containment and not a broken listener. Refuses to connect unless the route leads into the veth."""
    name = "outside_listener_answers_host"
    target = f"{outside.address}:{outside.port}"
    routes = _ip_json("route", "get", outside.address)
    device = str(routes[0].get("dev", "")) if routes else ""
    if device != outside.host_link:
        return CheckResult(name, False, f"not tried: {outside.address} routes via {device!r}, not {outside.host_link}")
    try:
        with socket.create_connection((outside.address, outside.port), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            answer = conn.recv(64).decode(errors="replace").strip()
    except OSError as exc:
        return CheckResult(name, False, f"{target} in netns {outside.namespace}: {exc}")
    try:
        forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    except OSError:
        forwarding = "unknown"
    ok = answer == outside.token
    said = "its token" if ok else f"{answer!r}, not its token"
    detail = (
        f"{target} in netns {outside.namespace} via {outside.host_link} answered with {said}; ip_forward={forwarding}"
    )
    return CheckResult(name, ok, detail)


def _iptables_rules(tool: str) -> dict[str, list[str]]:
    """`tool -S` as chain -> rule arguments (after `-A CHAIN`), in order; empty if the tool failed."""
    done = subprocess.run([tool, "-w", "10", "-S"], capture_output=True, text=True, timeout=30, check=False)
    chains: dict[str, list[str]] = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0] == "-A":
            chains.setdefault(parts[1], []).append(parts[2])
    return chains


def _rejects_the_rest(rules: list[str]) -> bool:
    return bool(rules) and rules[-1].startswith(("-j REJECT", "-j DROP"))


def _firewall_problems(
    chains: dict[str, list[str]], bridge: str, ports: tuple[int, ...], ipv6: bool, gateway: str = ""
) -> list[str]:
    def targets(parent: str, flag: str) -> list[str]:
        prefix = f"{flag} {bridge} -j "
        return [r[len(prefix) :].split()[0] for r in chains.get(parent, []) if r.startswith(prefix)]

    problems = []
    inputs = targets("INPUT", "-i")
    if not any(_rejects_the_rest(chains.get(t, [])) for t in inputs):
        problems.append(f"no INPUT rule from {bridge} into a chain that rejects the rest")
    for t in inputs if not ipv6 else []:
        missing = [p for p in ports if not any(f"--dport {p} " in r and "-j ACCEPT" in r for r in chains.get(t, []))]
        if missing:
            problems.append(f"{t} does not accept town ports {missing}")
        # An accept that names no destination opens that port on every host address, not only the gateway.
        accepts = [r for r in chains.get(t, []) if "-j ACCEPT" in r and "--ctstate" not in r]
        unscoped = [r for r in accepts if gateway and f"-d {gateway}/32 " not in r]
        if unscoped:
            problems.append(f"{t} accepts on host addresses other than the gateway {gateway}: {unscoped}")
    for flag in ("-i", "-o"):
        forwards = targets("DOCKER-USER", flag) + targets("FORWARD", flag)
        if not any(t in ("REJECT", "DROP") or _rejects_the_rest(chains.get(t, [])) for t in forwards):
            problems.append(f"nothing rejects traffic routed {'from' if flag == '-i' else 'to'} {bridge}")
    return problems


def firewall_check(network: TownNetwork) -> CheckResult:
    """Read (not probe) the town's host firewall rules: INPUT from the bridge accepts only the town ports and
    rejects the rest; traffic routed to or from the bridge is rejected; the same for IPv6 where it exists."""
    name = "host_firewall_rules_installed"
    # The town uses the iptables variant (plain, legacy or nft) that holds its rules; find that one.
    for suffix in ("", "-legacy", "-nft"):
        if shutil.which("iptables" + suffix) is None:
            continue
        chains = _iptables_rules("iptables" + suffix)
        if any(r.startswith(f"-i {network.bridge} ") for r in chains.get("INPUT", [])):
            break
    else:
        return CheckResult(
            name, False, f"no INPUT rule for bridge {network.bridge} in any iptables variant; run the self-test as root"
        )
    ports = network.allowed_host_ports
    problems = _firewall_problems(chains, network.bridge, ports, ipv6=False, gateway=network.gateway)
    checked = [f"iptables{suffix}"]
    if shutil.which("ip6tables" + suffix):
        problems += [
            f"IPv6: {p}" for p in _firewall_problems(_iptables_rules("ip6tables" + suffix), network.bridge, (), True)
        ]
        checked.append(f"ip6tables{suffix}")
    if problems:
        return CheckResult(name, False, "; ".join(problems) + "; recreate the town network with `gastown up`")
    return CheckResult(
        name,
        True,
        f"{' and '.join(checked)}: from {network.bridge} only tcp {list(ports)} to {network.gateway}, nothing routed",
    )


def outside_target(stack: contextlib.ExitStack, results: list[CheckResult]) -> Outside | None:
    """The self-test's outside listener for as long as `stack` lasts, once the host has reached it (recorded in
    `results`); None when it could not be made or reached: an outside the host cannot reach proves nothing about
    the agent, so the probe then fails that check."""
    try:
        outside = stack.enter_context(outside_listener())
    except GastownError as exc:
        results.append(CheckResult("outside_listener_answers_host", False, str(exc)))
        return None
    results.append(outside_answers_host(outside))
    return outside if results[-1].passed else None


def run_selftest(runtime: Runtime, image: str = DEFAULT_IMAGE, timeout_s: float = 60) -> list[CheckResult]:
    """Run every containment check; return one result per check (never raises for a failed check)."""
    town = f"selftest-{secrets.token_hex(3)}"
    results: list[CheckResult] = []
    try:
        with contextlib.ExitStack() as stack:
            target = outside_target(stack, results)
            network = runtime.ensure_network(town, NetworkPolicy())
            # The town port listens on every host address: the probe must find it open on the gateway only.
            with http_listener("") as town_port, http_listener("") as blocked_port:
                network = runtime.ensure_network(town, NetworkPolicy(allowed_host_ports=(town_port,)))
                results.append(firewall_check(network))
                results += _run_checks(runtime, image, town, network, town_port, blocked_port, target, timeout_s)
    except GastownError as exc:
        results.append(CheckResult("selftest_setup", False, str(exc)))
    finally:
        runtime.cleanup(town)
        with contextlib.suppress(GastownError):
            runtime.remove_network(town)
    return results


def _resolver_check(runtime: Runtime, town: str, agent: str) -> CheckResult:
    """The engine's resolver for agents forwards to nowhere: its only upstream is the container's own loopback
    (where the probe checks that nothing listens on port 53) and no search domain is appended. Read from the
    container's configuration; no name is looked up."""
    name = "agent_dns_forwards_nowhere"
    read = getattr(runtime, "resolver", None)
    if read is None:
        return CheckResult(name, False, f"{type(runtime).__name__} cannot report its containers' DNS settings")
    servers, search = read(town, agent)
    ok = servers == [NO_RESOLVER] and all(d == "." for d in search)
    want = f"want [{NO_RESOLVER}] and no search domain"
    return CheckResult(name, ok, f"upstreams={servers}, search={search or 'none'} ({want})")


def probe_spec(town: str, image: str, network: str, wallclock_s: int) -> Callable[..., LaunchSpec]:
    """How the self-test's containers are made (here and on swarm nodes): polecats of `town` on `network`, with
    the limits given, else modest ones that end within `wallclock_s`."""

    def spec(agent: str, command: list[str], limits: Limits | None = None, **env: str) -> LaunchSpec:
        return LaunchSpec(
            town=town,
            agent=agent,
            role="polecat",
            image=image,
            command=command,
            env=env,
            network=network,
            limits=limits or Limits(memory_mb=256, pids=128, wallclock_s=wallclock_s),
        )

    return spec


def _run_checks(
    runtime: Runtime,
    image: str,
    town: str,
    network: TownNetwork,
    town_port: int,
    blocked_port: int,
    outside: Outside | None,
    timeout_s: float,
) -> list[CheckResult]:
    spec = probe_spec(town, image, network.name, int(timeout_s))
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
        # Every address of this host is local: a connection to one never leaves the machine. The gateway is
        # tried on the blocked ports above (its town port is meant to be open).
        "other_host_addresses": [a for a in host_addresses() if a != network.gateway],
        "outside": [outside.address, outside.port] if outside else None,
        "peer": [peer_address, 8080] if peer_ready else None,
    }
    runtime.launch(spec("probe", ["python3", "-c", PROBE_SOURCE.read_text()], GASTOWN_PROBE=json.dumps(probe_cfg)))
    results.append(_resolver_check(runtime, town, "probe"))
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
