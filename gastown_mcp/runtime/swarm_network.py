"""The town's networks on a swarm: one internal overlay network per agent, and the relay that is the town on each.

An agent on another machine reaches nothing but its own overlay network (internal: no route out, no other
agent on it). The relay is one hardened container on the manager, next to the town: it sits on the town's
local internal bridge (whose host firewall lets it reach only the town's ports on the bridge address, see
`network.py`) and on every agent network under the name `town`, and forwards those ports only.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig

from gastown_mcp.errors import RuntimeUnavailable
from gastown_mcp.runtime import network as bridge_network
from gastown_mcp.runtime.docker_errors import translate_errors
from gastown_mcp.runtime.protocol import AGENT_GID, AGENT_UID, LABEL_AGENT, LABEL_TOWN, NetworkPolicy, TownNetwork
from gastown_mcp.runtime.swarm_spec import TOWN_ALIAS

LABEL_RELAY = "gastown.relay"  # not LABEL_TOWN: the relay is no agent, so orphan sweeps never see it
LABEL_PORTS = "gastown.relay.ports"
GONE_TIMEOUT_S = 20.0

# A TCP relay in the standard library: each listening port forwards to the same port on the town's address.
RELAY_SOURCE = r"""
import asyncio, sys
target, ports = sys.argv[1], [int(p) for p in sys.argv[2].split(",") if p]

async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except Exception:
        pass

async def handle(port, reader, writer):
    try:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(target, port), 10)
    except Exception:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    for w in (writer, up_writer):
        w.close()

async def main():
    servers = []
    for port in ports:
        servers.append(await asyncio.start_server(lambda r, w, p=port: handle(p, r, w), "0.0.0.0", port))
    print("relay ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))

asyncio.run(main())
"""


def relay_name(town: str) -> str:
    return f"gastown-{town}-relay"


def agent_network_name(town: str, agent: str) -> str:
    return f"gastown-{town}-{agent}"


def ensure(client: docker.DockerClient, town: str, policy: NetworkPolicy, image: str) -> TownNetwork:
    """The town's local bridge (with its firewall) and its relay; agents reach the town as `town`."""
    local = bridge_network.ensure_town_network(client, town, policy)
    ports = ",".join(str(p) for p in sorted(set(policy.allowed_host_ports)))
    with translate_errors(f"starting the relay of town {town}"):
        relay = _find(client, relay_name(town))
        if relay is not None and (relay.labels.get(LABEL_PORTS) != ports or relay.status != "running"):
            relay.remove(force=True)
            relay = None
        if relay is None:
            relay = _start_relay(client, town, local, ports, image)
        relay.reload()
        # A relay made again (new ports) must be back on the networks of the agents already running.
        attached = set((relay.attrs.get("NetworkSettings") or {}).get("Networks") or {})
        for net in client.networks.list(filters={"label": f"{LABEL_TOWN}={town}", "driver": "overlay"}):
            if net.name not in attached:
                net.connect(relay, aliases=[TOWN_ALIAS])
    return TownNetwork(
        town=town,
        name=local.name,
        bridge=local.bridge,
        subnet=local.subnet,
        gateway=TOWN_ALIAS,
        allowed_host_ports=local.allowed_host_ports,
        host_address=local.gateway,
    )


def _find(client: docker.DockerClient, name: str) -> Any:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def _start_relay(client: docker.DockerClient, town: str, local: TownNetwork, ports: str, image: str) -> Any:
    relay = client.containers.create(
        image,
        name=relay_name(town),
        entrypoint=["python3", "-c", RELAY_SOURCE, local.gateway, ports],
        command=[],
        labels={LABEL_RELAY: town, LABEL_PORTS: ports},
        user=f"{AGENT_UID}:{AGENT_GID}",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit="128m",
        memswap_limit="128m",
        pids_limit=64,
        nano_cpus=int(0.5e9),
        network=local.name,
        # Ports below 1024 without a capability: the sysctl lives in the relay's own network namespace.
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        restart_policy={"Name": "on-failure"},
        log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
    )
    try:
        relay.start()
    except docker.errors.APIError as exc:
        with contextlib.suppress(docker.errors.DockerException):
            relay.remove(force=True)
        raise RuntimeUnavailable(f"the relay of town {town} could not start: {exc.explanation}") from exc
    return relay


def ensure_agent_network(client: docker.DockerClient, town: str, agent: str) -> str:
    """An internal overlay network for one agent with the relay on it as `town`; returns its ID (a service
    naming it by name could meet an older network of that name still being removed)."""
    name = agent_network_name(town, agent)
    with translate_errors(f"creating the network of agent {agent}"):
        relay = _find(client, relay_name(town))
        if relay is None:
            raise RuntimeUnavailable(f"town {town} has no relay: start the town with `gastown up`")
        try:
            net = client.networks.get(name)
        except docker.errors.NotFound:
            net = client.networks.create(
                name,
                driver="overlay",
                internal=True,
                attachable=True,  # the relay is a plain container on the manager, not a service
                check_duplicate=True,
                labels={LABEL_TOWN: town, LABEL_AGENT: agent},
            )
        net.reload()
        if relay.id not in (net.attrs.get("Containers") or {}):
            with contextlib.suppress(docker.errors.APIError):  # already connected (a retried launch)
                net.connect(relay, aliases=[TOWN_ALIAS])
    return str(net.id)


def remove_agent_network(client: docker.DockerClient, town: str, agent: str) -> None:
    name = agent_network_name(town, agent)
    with translate_errors(f"removing the network of agent {agent}"):
        try:
            net = client.networks.get(name)
        except docker.errors.NotFound:
            return
        relay = _find(client, relay_name(town))
        if relay is not None:
            with contextlib.suppress(docker.errors.APIError):
                net.disconnect(relay, force=True)
        try:
            net.remove()
        except docker.errors.APIError:
            return  # the engine is still removing the task: the network stays, and a relaunch reuses it
        # The manager may list a removed network a little longer: a relaunch that found it then would name a
        # network about to vanish ("network ... not found"), so wait until it is gone.
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                client.networks.get(name)
            except docker.errors.NotFound:
                return
            time.sleep(0.25)


def remove(client: docker.DockerClient, town: str) -> None:
    """The relay, every agent network of the town, and the local bridge with its firewall."""
    with translate_errors(f"removing the networks of town {town}"):
        relay = _find(client, relay_name(town))
        if relay is not None:
            relay.remove(force=True)
        for net in client.networks.list(filters={"label": f"{LABEL_TOWN}={town}", "driver": "overlay"}):
            with contextlib.suppress(docker.errors.APIError):
                net.remove()
    bridge_network.remove_town_network(client, town)
