"""The town network: internal, idempotent, and fenced off from host ports by the firewall we install."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.network import (
    NetworkPolicy,
    TownNetwork,
    bridge_name,
    chain_names,
    ensure_town_network,
    remove_host_firewall,
    remove_town_network,
)
from gastown_mcp.runtime.protocol import LaunchSpec
from gastown_mcp.runtime.selftest import http_listener

pytestmark = pytest.mark.docker

CONNECT = """
import json, os, socket
out = {}
for port in json.loads(os.environ["PORTS"]):
    try:
        socket.create_connection((os.environ["HOST"], port), timeout=1.5).close()
        out[port] = "open"
    except OSError as exc:
        out[port] = type(exc).__name__
print(json.dumps(out))
"""


def rules(tool: str = "iptables") -> str:
    return subprocess.run([tool, "-S"], capture_output=True, text=True, check=True).stdout


def probe_ports(runtime: DockerRuntime, image: str, network: TownNetwork, agent: str, ports: list[int]) -> dict:
    runtime.launch(
        LaunchSpec(
            town=network.town,
            agent=agent,
            role="polecat",
            image=image,
            command=["python3", "-c", CONNECT],
            network=network.name,
            env={"HOST": network.gateway, "PORTS": json.dumps(ports)},
        )
    )
    runtime.wait(network.town, agent, timeout_s=30)
    return {int(k): v for k, v in json.loads(runtime.logs(network.town, agent).strip().splitlines()[-1]).items()}


@pytest.fixture
def network(runtime: DockerRuntime, root: None, town_name: str):  # type: ignore[no-untyped-def]
    net = ensure_town_network(runtime.client, town_name, NetworkPolicy(allowed_host_ports=(9,)))
    yield net
    runtime.cleanup(town_name)
    remove_town_network(runtime.client, town_name)


def test_the_town_network_is_internal_with_inter_container_traffic_off(
    runtime: DockerRuntime, network: TownNetwork
) -> None:
    attrs = runtime.client.networks.get(network.name).attrs
    assert attrs["Internal"] is True
    assert attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert network.bridge == bridge_name(network.town) and network.gateway


def test_setting_up_the_network_twice_changes_nothing(runtime: DockerRuntime, network: TownNetwork) -> None:
    again = ensure_town_network(runtime.client, network.town, NetworkPolicy(allowed_host_ports=(9,)))
    assert again == network
    in_chain, fwd_chain = chain_names(network.bridge)
    assert rules().count(f"-A INPUT -i {network.bridge} -j {in_chain}") == 1
    assert rules().count(f"-i {network.bridge} -j {fwd_chain}") == 1
    assert rules().count(f"-A {in_chain} -d {network.gateway}/32 -p tcp -m tcp --dport 9 -j ACCEPT") == 1


def test_teardown_removes_the_network_and_every_rule(runtime: DockerRuntime, root: None, town_name: str) -> None:
    net = ensure_town_network(runtime.client, town_name, NetworkPolicy(allowed_host_ports=(9,)))
    remove_town_network(runtime.client, town_name)
    remove_town_network(runtime.client, town_name)
    assert net.bridge not in rules() and net.bridge not in rules("ip6tables")
    assert not runtime.client.networks.list(names=[net.name])


def test_only_the_allowed_host_port_is_reachable_and_the_firewall_is_what_closes_the_rest(
    runtime: DockerRuntime, agent_image: str, network: TownNetwork
) -> None:
    with http_listener(network.gateway) as allowed, http_listener("0.0.0.0") as other:
        net = ensure_town_network(runtime.client, network.town, NetworkPolicy(allowed_host_ports=(allowed,)))
        fenced = probe_ports(runtime, agent_image, net, "fenced", [allowed, other])
        # Without our rules, an internal network still reaches every host port through its gateway.
        remove_host_firewall(net.bridge)
        open_hole = probe_ports(runtime, agent_image, net, "unfenced", [allowed, other])
    assert fenced == {allowed: "open", other: "ConnectionRefusedError"}
    assert open_hole == {allowed: "open", other: "open"}


def test_firewall_chains_of_a_bridge_that_is_gone_are_found_and_removed_and_live_ones_kept(
    runtime: DockerRuntime,
) -> None:
    import secrets

    from gastown_mcp.runtime.network import apply_host_firewall

    dead = f"gt{secrets.token_hex(6)}"  # no such interface: what a town killed before its teardown leaves
    apply_host_firewall(dead, [9], "10.254.0.1")
    try:
        assert dead in runtime.stale_firewalls()
        assert all(Path("/sys/class/net", b).exists() is False for b in runtime.stale_firewalls())
        assert runtime.remove_firewalls([dead, "docker0"]) == [dead]  # only bridges that are gone
        assert dead not in runtime.stale_firewalls()
        assert all(chain not in rules() for chain in chain_names(dead))
    finally:
        remove_host_firewall(dead)
