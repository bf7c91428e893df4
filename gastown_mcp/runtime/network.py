"""One internal Docker network per town, plus the host firewall that closes the bridge-gateway hole.

An `internal` bridge network has no route to the internet, and with inter-container communication off its
containers cannot reach each other. They can still reach every host port through the bridge's gateway IP,
so INPUT rules scoped to the town's bridge interface accept only the allowed host ports (the town's MCP
port and the gateway's) on the bridge's gateway address, and reject the rest (the same port numbers on the
host's other addresses included), and FORWARD rules reject anything routed to or from the bridge,
for IPv4 and IPv6. Setup and teardown are idempotent.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from gastown_mcp.errors import RuntimeUnavailable
from gastown_mcp.runtime.docker_errors import translate_errors
from gastown_mcp.runtime.protocol import LABEL_TOWN, NetworkPolicy, TownNetwork

__all__ = ["NetworkPolicy", "TownNetwork", "ensure_town_network", "remove_town_network"]


def network_name(town: str) -> str:
    return f"gastown-{town}"


def bridge_name(town: str) -> str:
    """A stable Linux interface name for the town's bridge (at most 15 characters)."""
    return "gt-" + hashlib.sha256(town.encode()).hexdigest()[:11]


def ensure_town_network(client: docker.DockerClient, town: str, policy: NetworkPolicy) -> TownNetwork:
    """Create the town's internal network if missing and (re)apply its host firewall rules."""
    name, bridge = network_name(town), bridge_name(town)
    with translate_errors(f"creating network {name}"):
        try:
            network = client.networks.get(name)
        except docker.errors.NotFound:
            ipam = None
            if policy.subnet:
                ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=policy.subnet)])
            network = client.networks.create(
                name,
                driver="bridge",
                internal=True,
                check_duplicate=True,
                labels={LABEL_TOWN: town},
                ipam=ipam,
                options={
                    "com.docker.network.bridge.name": bridge,
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                },
            )
        network.reload()
    options = network.attrs.get("Options") or {}
    if not network.attrs.get("Internal") or options.get("com.docker.network.bridge.enable_icc") != "false":
        raise RuntimeUnavailable(
            f"network {name} exists but is not internal with inter-container traffic off; "
            f"remove it with `docker network rm {name}` and try again"
        )
    bridge = options.get("com.docker.network.bridge.name", bridge)
    config = (network.attrs.get("IPAM") or {}).get("Config") or [{}]
    subnet, gateway = config[0].get("Subnet", ""), config[0].get("Gateway", "")
    if not gateway:
        raise RuntimeUnavailable(f"network {name} has no gateway address; remove it with `docker network rm {name}`")
    apply_host_firewall(bridge, policy.allowed_host_ports, gateway)
    return TownNetwork(town, name, bridge, subnet, gateway, tuple(policy.allowed_host_ports))


def remove_town_network(client: docker.DockerClient, town: str) -> None:
    """Remove the town's network and firewall rules; missing ones are fine. Its containers must be gone."""
    name = network_name(town)
    bridge = bridge_name(town)
    with translate_errors(f"removing network {name}"):
        try:
            network = client.networks.get(name)
        except docker.errors.NotFound:
            network = None
        if network is not None:
            bridge = (network.attrs.get("Options") or {}).get("com.docker.network.bridge.name", bridge)
            network.remove()
    remove_host_firewall(bridge)


def chain_names(bridge: str) -> tuple[str, str]:
    """The town's INPUT and FORWARD sub-chains (iptables allows 28 characters; bridge names have 14)."""
    return f"GT-IN-{bridge}", f"GT-FWD-{bridge}"


def input_rules(ports: Iterable[int], gateway: str, ipv6: bool = False) -> list[list[str]]:
    """Rules for packets from the town's bridge to the host itself: only the allowed TCP ports on the bridge's
    gateway address get in (a service on the same port number on another host address stays closed)."""
    rules = [["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]]
    if not ipv6:
        # Agents speak IPv4 to the town; over IPv6 (link-local) nothing on the host is reachable.
        dest = ["-d", f"{gateway}/32"]
        rules += [["-p", "tcp", *dest, "--dport", str(port), "-j", "ACCEPT"] for port in sorted(set(ports))]
    return rules + _reject_all(ipv6)


def forward_rules(ipv6: bool = False) -> list[list[str]]:
    """Rules for packets the host would route to or from the bridge: none (Docker's internal flag drops them
    too; rejecting here also makes a blocked connect fail at once instead of timing out)."""
    return _reject_all(ipv6)


def _reject_all(ipv6: bool) -> list[list[str]]:
    reject = "icmp6-port-unreachable" if ipv6 else "icmp-port-unreachable"
    return [["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"], ["-j", "REJECT", "--reject-with", reject]]


def apply_host_firewall(bridge: str, ports: Sequence[int], gateway: str) -> None:
    """Install (or replace) the town's rules: from `bridge`, only `ports` on `gateway`; nothing routed."""
    in_chain, fwd_chain = chain_names(bridge)
    for tool in _tools():
        ipv6 = tool.startswith("ip6tables")
        _fill_chain(tool, in_chain, input_rules(ports, gateway, ipv6))
        _fill_chain(tool, fwd_chain, forward_rules(ipv6))
        _ensure_jump(tool, ["INPUT", "-i", bridge, "-j", in_chain])
        # DOCKER-USER runs before Docker's own FORWARD rules; without it (no Docker chains) use FORWARD.
        parent = "DOCKER-USER" if _run(tool, "-n", "-L", "DOCKER-USER", check=False).returncode == 0 else "FORWARD"
        _ensure_jump(tool, [parent, "-i", bridge, "-j", fwd_chain])
        _ensure_jump(tool, [parent, "-o", bridge, "-j", fwd_chain])


def remove_host_firewall(bridge: str) -> None:
    in_chain, fwd_chain = chain_names(bridge)
    for tool in _tools():
        jumps = [["INPUT", "-i", bridge, "-j", in_chain]]
        jumps += [
            [parent, flag, bridge, "-j", fwd_chain] for parent in ("DOCKER-USER", "FORWARD") for flag in ("-i", "-o")
        ]
        for jump in jumps:
            while _run(tool, "-C", *jump, check=False).returncode == 0:
                _run(tool, "-D", *jump)
        for chain in (in_chain, fwd_chain):
            if _run(tool, "-n", "-L", chain, check=False).returncode == 0:
                _run(tool, "-F", chain)
                _run(tool, "-X", chain)


def stale_firewall_bridges() -> list[str]:
    """Bridges whose town firewall chains are still in the host's tables though the bridge is gone (a town
    killed before its teardown): any town's, since the chains name the bridge and a missing bridge needs none."""
    found: set[str] = set()
    for tool in _tools():
        listed = _run(tool, "-S", check=False).stdout
        for line in listed.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "-N" and parts[1].startswith(("GT-IN-", "GT-FWD-")):
                bridge = parts[1].split("-", 2)[2]
                if not Path("/sys/class/net", bridge).exists():
                    found.add(bridge)
    return sorted(found)


def _fill_chain(tool: str, chain: str, rules: list[list[str]]) -> None:
    if _run(tool, "-n", "-L", chain, check=False).returncode != 0:
        _run(tool, "-N", chain)
    _run(tool, "-F", chain)
    for rule in rules:
        _run(tool, "-A", chain, *rule)


def _ensure_jump(tool: str, jump: list[str]) -> None:
    if _run(tool, "-C", *jump, check=False).returncode != 0:
        _run(tool, "-I", jump[0], "1", *jump[1:])


@functools.cache
def _tools() -> tuple[str, ...]:
    """iptables and ip6tables, in the variant (nft or legacy) that holds Docker's own rules: a town in a
    container (compose.yaml) may default to another variant than the host's Docker uses."""
    if shutil.which("iptables") is None:
        raise RuntimeUnavailable(
            "iptables is not installed, so agent containers could reach every host port: "
            "run `sudo bash scripts/install-docker.sh`"
        )
    suffix = ""
    if not _has_docker_chain("iptables"):
        variants = ("-legacy", "-nft")
        suffix = next((v for v in variants if shutil.which("iptables" + v) and _has_docker_chain("iptables" + v)), "")
    ip6 = "ip6tables" + suffix
    return ("iptables" + suffix,) + ((ip6,) if shutil.which(ip6) else ())


def _has_docker_chain(tool: str) -> bool:
    return _run(tool, "-n", "-L", "DOCKER-USER", check=False).returncode == 0


def _run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([tool, "-w", "10", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeUnavailable(
            f"`{tool} {' '.join(args)}` failed: {done.stderr.strip()}; the town needs root (or CAP_NET_ADMIN) "
            "to fence agent containers off from the host"
        )
    return done
