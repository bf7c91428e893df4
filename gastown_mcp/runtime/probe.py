"""Containment probe, run inside an agent container by `selftest.py` (as `python3 -c <this file>`); stdlib only.

Reads its targets as JSON from GASTOWN_PROBE (addresses on this machine; it looks up no names), tries each with a
short timeout, and prints one JSON list of {name, passed, detail} as its last line.
"""

import json
import os
import socket
import struct
import urllib.request
from typing import Any

TIMEOUT_S = 1.5
FORBIDDEN_NAMES = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY")
FORBIDDEN_PREFIXES = ("sk-ant-", "sk-proj-")
Results = list[tuple[str, bool, str]]


def connect(host: str, port: int) -> str | None:
    """None if a TCP connection to host:port succeeds, else why it failed."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def status_fields() -> dict[str, str]:
    fields: dict[str, str] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def mounts() -> list[list[str]]:
    with open("/proc/mounts") as f:
        return [line.split() for line in f]


def check_identity(results: Results) -> None:
    uid, euid = os.getuid(), os.geteuid()
    results.append(("uid_not_root", uid != 0 and euid != 0, f"uid={uid} euid={euid}"))
    fields = status_fields()
    caps = {k: fields.get(k, "?") for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    empty = all(v.strip("0") == "" for v in caps.values())
    results.append(("capabilities_empty", empty, " ".join(f"{k}={v}" for k, v in caps.items())))
    nnp = fields.get("NoNewPrivs")
    results.append(("no_new_privileges", nnp == "1", f"NoNewPrivs={nnp}"))


def check_filesystems(results: Results) -> None:
    table = mounts()
    root = [m for m in table if m[1] == "/"]
    root_ro = bool(root) and "ro" in root[-1][3].split(",")
    try:
        with open("/.probe-write", "w"):
            pass
        wrote = "write to / succeeded"
    except OSError as exc:
        wrote = f"write to / refused: {exc.strerror}"
    results.append(("rootfs_read_only", root_ro and "refused" in wrote, wrote))
    home = os.environ.get("HOME", "")
    home_mount = [m for m in table if m[1] == home]
    tmp_mount = [m for m in table if m[1] == "/tmp"]
    capped = all(bool(m) and m[-1][2] == "tmpfs" and "size=" in m[-1][3] for m in (home_mount, tmp_mount))
    results.append(("home_and_tmp_are_capped_tmpfs", capped, f"HOME={home} tmp={tmp_mount[-1:]!r}"))
    host_home = [m[1] for m in table if m[1] in ("/root", "/host") or (m[1].startswith("/home/") and m[1] != home)]
    results.append(("no_host_home", not host_home, f"suspicious mounts: {host_home}"))
    sockets = [p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)]
    docker_env = "DOCKER_HOST" in os.environ
    results.append(("no_docker_socket", not sockets and not docker_env, f"sockets={sockets} DOCKER_HOST={docker_env}"))


def check_environment(results: Results) -> None:
    environments = [dict(os.environ)]
    try:
        with open("/proc/1/environ", "rb") as f:
            pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
        environments.append({k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs})
    except OSError:
        pass
    found = sorted(
        {
            name
            for env in environments
            for name, value in env.items()
            if name in FORBIDDEN_NAMES or value.startswith(FORBIDDEN_PREFIXES)
        }
    )
    results.append(("no_provider_key_in_env", not found, f"found: {found}" if found else "none found"))


def routes() -> list[str]:
    """The container's IPv4 routing table from /proc/net/route, as "dest/len via gw dev"."""

    def dotted(hex_le: str) -> str:
        return socket.inet_ntoa(struct.pack("<I", int(hex_le, 16)))

    with open("/proc/net/route") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    table = []
    for row in rows:
        prefix = bin(int(row[7], 16)).count("1")
        via = f" via {dotted(row[2])}" if int(row[2], 16) else ""
        table.append(f"{dotted(row[1])}/{prefix}{via} {row[0]}")
    return table


def nameservers() -> list[str]:
    """The nameservers in /etc/resolv.conf, read only: the probe never sends a DNS query."""
    try:
        with open("/etc/resolv.conf") as f:
            return [line.split()[1] for line in f if line.startswith("nameserver") and len(line.split()) > 1]
    except OSError as exc:
        return [f"unreadable: {exc.strerror}"]


def resolv_conf() -> tuple[list[str], list[str]]:
    """The nameservers and search domains of /etc/resolv.conf, read only."""
    servers, search = nameservers(), []
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                if line.startswith(("search", "domain")):
                    search += line.split()[1:]
    except OSError:
        pass
    return servers, search


def dns_listeners() -> list[str]:
    """Sockets bound to port 53 in the container's own network namespace (from /proc/net/udp, udp6, tcp, tcp6)."""
    found = []
    for table in ("udp", "udp6", "tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}") as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        found += [f"{table} {row[1]}" for row in rows if len(row) > 1 and row[1].endswith(":0035")]
    return found


def check_resolver(results: Results) -> None:
    """Nothing in the container answers DNS: the engine's embedded resolver (127.0.0.11) forwards to the
    container's own 127.0.0.1:53, so an outside name gets no answer (the self-test reads the upstream setting
    from the host). Read from /etc/resolv.conf and /proc/net; no query is sent."""
    servers, search = resolv_conf()
    listeners = dns_listeners()
    loopback = bool(servers) and all(ip.startswith("127.") for ip in servers)
    no_search = all(domain == "." for domain in search)
    detail = f"nameservers={servers}, search={search or 'none'}, port-53 sockets={listeners or 'none'} (read only)"
    results.append(("no_dns_answers_inside", loopback and not listeners and no_search, detail))


def check_network(results: Results, cfg: dict[str, Any]) -> None:
    # The outside is a listener the self-test made in a network namespace on this host and has already
    # reached from the host; only a connection attempt to it is made, never a name lookup.
    outside = cfg.get("outside")
    context = f"routes={routes()}; nameservers={nameservers()} (read, not queried)"
    if outside:
        outcome = connect(outside[0], outside[1])
        detail = f"outside listener {outside[0]}:{outside[1]} -> {outcome or 'connected'}; {context}"
        # Docker 20.10 gives containers on an internal network a default route to the bridge; the host drops
        # what arrives there, so what counts is that nothing gets through, not the routing table.
        results.append(("no_route_to_internet", outcome is not None, detail))
    else:
        why = "the self-test could not set one up (see outside_listener_answers_host)"
        detail = f"no outside listener to try: {why}; {context}"
        results.append(("no_route_to_internet", False, detail))

    gateway, port = cfg["gateway"], cfg["town_port"]
    try:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy elsewhere
        with direct.open(f"http://{gateway}:{port}/", timeout=TIMEOUT_S * 2) as response:
            town = f"HTTP {response.status}"
    except OSError as exc:
        town = f"failed: {exc}"
    results.append(("town_port_reachable", town.startswith("HTTP 2"), f"{gateway}:{port} -> {town}"))

    blocked_ports = cfg.get("blocked_ports", [])
    blocked = [(gateway, p) for p in blocked_ports]
    # Other host addresses are closed on every port, the town's own port number included: the firewall must
    # match the address, not only the port.
    blocked += [(host, p) for host in cfg.get("other_host_addresses", []) for p in [*blocked_ports, port]]
    open_ones = [f"{h}:{p}" for h, p in blocked if connect(h, p) is None]
    results.append(("other_host_ports_blocked", not open_ones, f"tried {len(blocked)}, open: {open_ones}"))

    peer = cfg.get("peer")
    if peer:
        outcome = connect(peer[0], peer[1])
        results.append(("other_agent_unreachable", outcome is not None, f"{peer[0]}:{peer[1]} -> {outcome}"))


def main() -> None:
    cfg = json.loads(os.environ.get("GASTOWN_PROBE", "{}"))
    results: Results = []
    for check in (check_identity, check_filesystems, check_environment, check_resolver):
        check(results)
    if cfg.get("gateway"):
        check_network(results, cfg)
    print(json.dumps([{"name": n, "passed": bool(p), "detail": d} for n, p, d in results]))


if __name__ == "__main__":
    main()
