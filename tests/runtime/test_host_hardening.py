"""Host hardening (issue 16, "Host and containers"), checked by `docker exec` into real agent containers.

Everything a test reaches is on this machine: the town's own network, host addresses, and a dummy interface or
network namespace the test creates itself (in the self-test's 198.18.0.0/15 range). No DNS query leaves it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from gastown_mcp.config import RuntimeSection
from gastown_mcp.errors import Conflict, InvalidInput
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.network import NetworkPolicy, TownNetwork, ensure_town_network, remove_town_network
from gastown_mcp.runtime.protocol import LaunchSpec
from gastown_mcp.runtime.selftest import _free_subnet, host_addresses, http_listener

pytestmark = pytest.mark.docker

CONNECT = """
import json, socket, sys
out = {}
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=1.5).close()
        out[f"{host}:{port}"] = "open"
    except OSError as exc:
        out[f"{host}:{port}"] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.fixture
def network(runtime: DockerRuntime, root: None, town_name: str) -> Iterator[TownNetwork]:
    net = ensure_town_network(runtime.client, town_name, NetworkPolicy(allowed_host_ports=(9,)))
    yield net
    runtime.cleanup(town_name)
    remove_town_network(runtime.client, town_name)


def start_agent(runtime: DockerRuntime, image: str, network: TownNetwork, agent: str, **kwargs: object) -> LaunchSpec:
    spec = LaunchSpec(
        town=network.town,
        agent=agent,
        role="polecat",
        image=image,
        command=["sleep", "300"],
        network=network.name,
        **kwargs,  # type: ignore[arg-type]
    )
    runtime.launch(spec)
    return spec


def exec_in(runtime: DockerRuntime, spec: LaunchSpec, *command: str) -> tuple[int, str]:
    container = runtime.client.containers.get(spec.container_name)
    code, out = container.exec_run(list(command), demux=False)
    return code, out.decode(errors="replace")


@contextlib.contextmanager
def dummy_address() -> Iterator[str]:
    """An address on an interface this test adds to the host (removed afterwards). A veth pair, since this
    kernel has no dummy driver; both ends stay in the host namespace and lead nowhere."""
    tag = secrets.token_hex(3)
    link = f"gtdm{tag}"
    address = str(_free_subnet()[1])
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", f"gtdp{tag}"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", link], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", link], check=False)


# -- 3. the host firewall matches the gateway address, not only the port ------------------------------------


def test_the_town_port_on_another_host_address_is_unreachable_from_an_agent(
    runtime: DockerRuntime, agent_image: str, network: TownNetwork
) -> None:
    # One service on the town's port number on every host address, like a host daemon bound to 0.0.0.0.
    with dummy_address() as extra, http_listener("") as port:
        net = ensure_town_network(runtime.client, network.town, NetworkPolicy(allowed_host_ports=(port,)))
        others = [a for a in {extra, *host_addresses()} if a != net.gateway]
        assert extra in others
        targets = [[net.gateway, port]] + [[a, port] for a in others]
        spec = start_agent(runtime, agent_image, net, "fenced")
        code, out = exec_in(runtime, spec, "python3", "-c", CONNECT, json.dumps(targets))
    assert code == 0, out
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen.pop(f"{net.gateway}:{port}") == "open"
    assert seen and all(v != "open" for v in seen.values()), seen


# -- 4. agents run as a dedicated high uid/gid that is no account on the host --------------------------------


def test_an_agent_runs_as_a_dedicated_high_id_that_is_no_host_account(
    runtime: DockerRuntime, agent_image: str, network: TownNetwork
) -> None:
    spec = start_agent(runtime, agent_image, network, "ids")
    code, out = exec_in(runtime, spec, "sh", "-c", 'echo "$(id -u) $(id -g) $(id -un) $(stat -c %u:%g "$HOME")"')
    assert code == 0, out
    uid, gid, name, home_owner = out.split()
    assert int(uid) >= 60000 and int(gid) >= 60000, out
    assert name == "agent", "the image's agent user must have the uid the runtime runs it as"
    assert home_owner == f"{uid}:{gid}"
    host_ids = {
        int(line.split(":")[2]) for line in Path("/etc/passwd").read_text().splitlines() if line.count(":") >= 3
    }
    host_groups = {
        int(line.split(":")[2]) for line in Path("/etc/group").read_text().splitlines() if line.count(":") >= 3
    }
    assert int(uid) not in host_ids and int(gid) not in host_groups


# -- 2. no DNS tunnel: the embedded resolver (127.0.0.11) forwards outside names nowhere -------------------

QUERY = """
import os, socket, struct, sys
name = sys.argv[1]
packet = struct.pack(">HHHHHH", 0x4754, 0x0100, 1, 0, 0, 0)
packet += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack(">HH", 1, 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(4)
sock.sendto(packet, ("127.0.0.11", 53))
try:
    reply = sock.recv(512)
except OSError as exc:
    print(f"no reply: {type(exc).__name__}")
else:
    rcode, answers = reply[3] & 0x0F, struct.unpack(">H", reply[6:8])[0]
    print(f"rcode={rcode} answers={answers}")
"""


@contextlib.contextmanager
def dns_listener(host: str, port: int = 53) -> Iterator[list[bytes]]:
    """A UDP listener on this machine that records every datagram (a query reaching it would be a tunnel)."""
    received: list[bytes] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    deadline = time.monotonic() + 60
    while True:  # another run of this test (a colleague's suite on the same host) may hold the port a moment
        try:
            sock.bind((host, port))
            break
        except OSError:
            if time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.5)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                received.append(sock.recv(2048))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def test_an_agents_resolver_forwards_outside_names_nowhere(
    runtime: DockerRuntime, agent_image: str, network: TownNetwork
) -> None:
    spec = start_agent(runtime, agent_image, network, "dns")
    host_config = runtime.client.containers.get(spec.container_name).attrs["HostConfig"]
    # Checked before any query is sent: without its own resolver setting, Docker's embedded resolver forwards to
    # the host's resolvers (off this machine here; from the host's own namespace when they are on loopback).
    assert host_config.get("Dns") == ["127.0.0.1"], f"agent DNS upstreams: {host_config.get('Dns')}"
    name = f"gt{secrets.token_hex(6)}.tunnel.invalid"
    # A resolver on the host's loopback is what Docker would query from the host's namespace: it must hear nothing.
    with dns_listener("127.0.0.1") as heard:
        code, out = exec_in(runtime, spec, "python3", "-c", QUERY, name)
    assert code == 0, out
    assert "answers=0" in out or "no reply" in out, out
    assert not [q for q in heard if name.split(".")[0].encode() in q], heard


def test_an_image_built_for_other_agent_ids_is_refused_with_how_to_rebuild(
    runtime: DockerRuntime, agent_image: str, network: TownNetwork
) -> None:
    with pytest.raises(Conflict, match=r"runs as 61000:61000 .* 62000:62000 .*gastown image build"):
        start_agent(runtime, agent_image, network, "other-ids", uid=62000, gid=62000)
    assert runtime.list(network.town) == []


@pytest.mark.parametrize("ids", [(0, 0), (61000, 999), (2**31, 61000)])
def test_root_or_system_agent_ids_are_refused(ids: tuple[int, int]) -> None:
    with pytest.raises(InvalidInput, match=r"\[runtime\] agent_"):
        LaunchSpec(town="t", agent="a", role="polecat", uid=ids[0], gid=ids[1])
    with pytest.raises(ValidationError, match="agent_"):
        RuntimeSection(agent_uid=ids[0], agent_gid=ids[1])
