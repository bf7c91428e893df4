"""Containment checks on one swarm node (`gastown doctor --sandbox` for the swarm backend): the same probe as
on the local engine (`probe.py`), run as agent services placed on that node, on a throwaway town's networks.

The probe must reach the town's port through the relay (`town`) and nothing else: not the town's other
ports, not any address of this machine or of the node, not another agent, not the "outside" (a listener in
a namespace this check makes on this machine). A memory hog, a fork bomb and a sleeper on the node show the
memory, pids and wall-clock limits hold there.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Sequence
from typing import Any

from gastown_mcp.errors import GastownError
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE, Limits, NetworkPolicy
from gastown_mcp.runtime.selftest import (
    FORK_BOMB,
    MEMORY_HOG,
    PROBE_SOURCE,
    CheckResult,
    Outside,
    host_addresses,
    http_listener,
    outside_target,
    probe_spec,
    run_selftest,
)
from gastown_mcp.runtime.swarm_backend import SwarmRuntime
from gastown_mcp.runtime.swarm_spec import TOWN_ALIAS


def run_on_nodes(runtime: SwarmRuntime, image: str = DEFAULT_IMAGE) -> list[CheckResult]:
    """`gastown doctor --sandbox` on a swarm: the local checks on this engine (gates run here), then every check
    on each ready node agents may be placed on, each result named `<node>: <check>`. A swarm with no such node
    fails one check saying so."""
    results = run_selftest(runtime.local, image)
    nodes = [
        n["hostname"]
        for n in runtime.nodes()
        if n["state"] == "ready" and n["availability"] == "active" and may_place(n, runtime.placement)
    ]
    if not nodes:
        results.append(CheckResult("swarm_nodes", False, "no ready node agents may be placed on (`docker node ls`)"))
    for node in nodes:
        results += [CheckResult(f"{node}: {r.name}", r.passed, r.detail) for r in run_on_node(runtime, node, image)]
    return results


def may_place(node: dict[str, str], placement: Sequence[str]) -> bool:
    """Whether the swarm may place an agent on `node` by `placement`, judged on `node.hostname`, `node.role`
    and `node.id` (`==` and `!=`); other constraints (labels, platform) count as met, so the checks run on
    every node that might take agents, never on fewer."""
    fields = {"node.hostname": node["hostname"], "node.role": node["role"], "node.id": node["id"]}
    for constraint in placement:
        for op in ("!=", "=="):
            key, sep, value = (part.strip() for part in constraint.partition(op))
            if sep and key in fields:
                if (fields[key] == value) != (op == "=="):
                    return False
                break
    return True


def run_on_node(
    runtime: SwarmRuntime, node: str, image: str = DEFAULT_IMAGE, timeout_s: float = 90
) -> list[CheckResult]:
    """Every containment check with the agents placed on the node whose hostname is `node`."""
    town = f"swst-{secrets.token_hex(3)}"
    placement = (f"node.hostname=={node}",)
    results: list[CheckResult] = []
    try:
        with contextlib.ExitStack() as stack:
            target = outside_target(stack, results)
            town_port = stack.enter_context(http_listener(""))
            blocked_port = stack.enter_context(http_listener(""))
            runtime.ensure_network(town, NetworkPolicy(allowed_host_ports=(town_port, blocked_port)))
            # Made again with the town port only: the relay forwards what the town serves, nothing more.
            network = runtime.ensure_network(town, NetworkPolicy(allowed_host_ports=(town_port,)))
            results += _checks(runtime, town, node, placement, image, network.name, town_port, blocked_port, target)
            for name in ("hog", "bomb", "sleeper"):
                results += _limit(runtime, town, name, timeout_s)
    except GastownError as exc:
        results.append(CheckResult("swarm_selftest_setup", False, str(exc)))
    finally:
        runtime.cleanup(town)
        with contextlib.suppress(GastownError):
            runtime.remove_network(town)
    return results


def _checks(
    runtime: SwarmRuntime,
    town: str,
    node: str,
    placement: tuple[str, ...],
    image: str,
    network: str,
    town_port: int,
    blocked_port: int,
    outside: Outside | None,
) -> list[CheckResult]:
    spec = probe_spec(town, image, network, 90)
    runtime.launch_on(spec("hog", ["python3", "-c", MEMORY_HOG], Limits(memory_mb=64, wallclock_s=90)), placement)
    runtime.launch_on(spec("bomb", ["python3", "-c", FORK_BOMB], Limits(pids=32, wallclock_s=90)), placement)
    runtime.launch_on(spec("sleeper", ["sleep", "600"], Limits(wallclock_s=3)), placement)
    runtime.launch_on(spec("peer", ["python3", "-m", "http.server", "8080"]), placement)
    peer = runtime.status(town, "peer").address
    node_addresses = [n["address"] for n in runtime.nodes() if n["address"]]
    cfg: dict[str, Any] = {
        "gateway": TOWN_ALIAS,
        "town_port": town_port,
        "blocked_ports": [blocked_port, 22, 2375, 2377],
        # Every address of this machine and of every node: none may be reached on any port.
        "other_host_addresses": sorted(set(host_addresses()) | set(node_addresses)),
        "outside": [outside.address, outside.port] if outside else None,
        "peer": [peer, 8080] if peer else None,
    }
    runtime.launch_on(
        spec("probe", ["python3", "-c", PROBE_SOURCE.read_text()], GASTOWN_PROBE=json.dumps(cfg)), placement
    )
    probe = runtime.wait(town, "probe", 90)
    on = runtime.node_of(town, "probe")
    results = [CheckResult("placed_on_node", on == node, f"probe ran on {on}, wanted {node}")]
    results.append(CheckResult("peer_agent_running", peer is not None, f"peer at {peer}:8080 on its own network"))
    output = runtime.logs(town, "probe").strip().splitlines()
    try:
        found = next(line for line in reversed(output) if line.startswith("[{"))
        results += [CheckResult(r["name"], r["passed"], r["detail"]) for r in json.loads(found)]
    except (StopIteration, ValueError, KeyError):
        results.append(CheckResult("probe_ran", False, f"probe {probe.reason}: {' '.join(output[-5:])}"))
    return results


def _limit(runtime: SwarmRuntime, town: str, name: str, timeout_s: float) -> list[CheckResult]:
    status = runtime.wait(town, name, timeout_s)
    text = runtime.logs(town, name).strip()
    if name == "hog":
        return [
            CheckResult("memory_hog_oom_killed", status.reason == "oom", f"exit {status.exit_code}, {status.reason}")
        ]
    if name == "bomb":
        forks = int(text.split("forks=")[1].split()[0]) if "forks=" in text else -1
        return [
            CheckResult("fork_bomb_stopped_at_pids_limit", 0 <= forks < 32 and "unlimited" not in text, text[-300:])
        ]
    detail = f"limit 3 s, `sleep 600` ended {status.reason} (exit {status.exit_code})"
    return [CheckResult("wallclock_limit_stops_sleeper", status.reason == "wallclock", detail)]
