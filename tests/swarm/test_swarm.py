"""Agents on other machines, for real: a 2-worker Docker Swarm on this machine (see conftest.py).

First `gastown doctor --sandbox` in a swarm town: the containment checks on this engine and on the node
its agents may be placed on. Then a town with `[runtime] backend = "swarm"` works six beads
with Claude Code polecats (the scripted stand-in as the model): the first four are placed on both workers,
each gets its repository from the town over git smart HTTP and pushes its branch back; one worker is killed
while its polecats are mid-bead, the witness sees them gone with their node, and their beads are worked again
on the other worker. Every bead lands on main exactly once.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from e2e.harness import BackgroundTown, ByAgent, Plan, agent_named_in, git_repo, is_resumed
from waits import until

from gastown_mcp import rigs
from gastown_mcp.config import Settings
from gastown_mcp.models import MergeState, Verb
from gastown_mcp.runtime.swarm_spec import service_name
from gastown_mcp.serving import serve
from gastown_mcp.standin import Conversation, Standin, build_standin
from gastown_mcp.town import Town, operator

from .nodes import Swarm, gastown

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]
OP = operator()
FIRST_WAVE = ("nux", "slit", "rictus", "toast")  # the first names the fleet hands out, in order
GO = "refs/tags/gastown-go"
# The first wave waits after claiming until the test puts GO into the agent's repository at the town: polled
# over the agent's own git endpoint (the only way it reaches the town's disk), at most ~9.5 min, inside the
# 10-minute Bash limit asked for. A standalone `sleep` would not do: Claude Code refuses one, and a fixed nap
# races the launches of the others under load.
WAIT_FOR_GO = (
    f"i=0; until git ls-remote --exit-code origin {GO} >/dev/null 2>&1 || [ $i -ge 280 ]; "
    "do sleep 2; i=$((i+1)); done; echo released"
)
HOLD = ("Bash", {"command": WAIT_FOR_GO, "description": "Wait for the go-ahead", "timeout": 600_000})


def paused_on_node(swarm: Swarm, town: str, agent: str, node: str) -> bool:
    """What the node's own engine says of the agent's task container (not what the town thinks)."""
    service = swarm.runtime.client.services.list(filters={"name": service_name(town, agent)})[0]
    tasks = [t for t in service.tasks() if t["Status"]["State"] == "running"]
    cid = tasks[0]["Status"]["ContainerStatus"]["ContainerID"]
    out = subprocess.run(
        ["docker", "exec", node, "docker", "inspect", "-f", "{{.State.Paused}}", cid], capture_output=True, check=True
    )
    return out.stdout.decode().strip() == "true"


def release(town: Town, agent: str) -> None:
    """Let a first-wave polecat waiting in `WAIT_FOR_GO` go on."""
    git_dir = Path(str(town.agent(agent).metadata["worktree"])) / ".git"
    subprocess.run(
        ["git", "-c", f"safe.directory={git_dir}", "--git-dir", str(git_dir), "update-ref", GO, "HEAD"], check=True
    )


def test_doctor_sandbox_runs_the_containment_checks_on_each_node_agents_may_use(swarm: Swarm, tmp_path: Path) -> None:
    # A swarm town whose agents may run on the second worker only: the checks run here and on that node.
    node = swarm.workers[1]
    town_dir = tmp_path / "town"
    town_dir.mkdir()
    (town_dir / "town.toml").write_text(
        f'[town]\nname = "doc"\n\n[runtime]\nbackend = "swarm"\nimage = "{swarm.image}"\n'
        f'swarm_placement = ["node.role==worker", "node.hostname=={node}"]\n'
    )
    listed = gastown("swarm", "nodes", "--json")
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.stdout)
    assert {n["hostname"] for n in found if n["state"] == "ready" and n["role"] == "worker"} == set(swarm.workers)
    assert all(n["agents"] == (n["role"] == "worker") for n in found)  # the default placement: workers only
    done = gastown("doctor", "--sandbox", "--json", "--town", str(town_dir))
    results = json.loads(done.stdout)
    failed = [f"{r['name']}: {r['detail']}" for r in results if not r["passed"]]
    assert not failed, "\n".join(failed)
    assert done.exit_code == 0, done.output
    names = {r["name"] for r in results}
    assert not any(n.startswith(swarm.workers[0]) for n in names)  # not a node this town places agents on
    assert "no_new_privileges" in names  # this engine's own checks (gates run here)
    for check in (
        "placed_on_node",
        "town_port_reachable",
        "other_host_ports_blocked",
        "other_agent_unreachable",
        "no_route_to_internet",
        "no_new_privileges",
        "capabilities_empty",
        "rootfs_read_only",
        "memory_hog_oom_killed",
        "fork_bomb_stopped_at_pids_limit",
        "wallclock_limit_stops_sleeper",
    ):
        assert f"{node}: {check}" in names


@pytest.fixture
def swarm_town(tmp_path: Path, swarm: Swarm) -> Iterator[tuple[Town, Standin]]:
    # The first wave holds after claiming, so a node can be killed while its polecats are mid-bead.
    script = ByAgent(plans={name: Plan(after_claim=[HOLD]) for name in FIRST_WAVE})
    name = f"sw{secrets.token_hex(3)}"
    standin = build_standin(script)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(serve(standin.app)) as standin_url:
        town_dir = tmp_path / "town"
        town_dir.mkdir()
        settings = Settings.model_validate(
            {
                "town_dir": town_dir,
                "town": {"name": name},
                "lease": {"seconds": 120},
                "server": {"port": 0},
                "gateway": {
                    "port": 0,
                    "default_upstream": "standin",
                    "upstreams": {"standin": {"base_url": standin_url, "key_env": "STANDIN_KEY"}},
                },
                "runtime": {
                    "backend": "swarm",
                    "image": swarm.image,
                    "limits": {"polecat": {"memory_mb": 512, "cpus": 0.5}},
                },
                "scheduler": {"auto": True, "max_polecats": 4, "spawn_per_tick": 4, "interval_seconds": 0.5},
                "witness": {"interval_seconds": 1, "idle_seconds": 3600},
            }
        )
        rigs.add_rig(town_dir, "sample", str(git_repo(tmp_path / "sample")))
        process = BackgroundTown(settings, {"STANDIN_KEY": "standin-key"}, swarm.runtime)
        ready = threading.Event()
        running = portal.start_task_soon(process.run, lambda _state: ready.set())
        running.add_done_callback(lambda _future: ready.set())
        try:
            assert ready.wait(90), "the town process did not start within 90 s"
            if running.done():
                running.result()
            assert process.town is not None
            yield process.town, standin
        finally:
            portal.call(process.stop)
            running.result(timeout=120)
            swarm.runtime.cleanup(name)
            swarm.runtime.remove_network(name)


def test_six_beads_on_two_nodes_all_merge_and_a_killed_node_loses_none(
    swarm: Swarm, swarm_town: tuple[Town, Standin]
) -> None:
    town, standin = swarm_town
    name = town.settings.town.name
    beads = [town.bead_create(OP, f"Write note {i}").id for i in range(6)]

    def placed() -> dict[str, str] | None:
        """The first wave's nodes, once all four run, hold their beads and are spread over both workers."""
        nodes = {a: swarm.runtime.node_of(name, a) for a in FIRST_WAVE}
        running = {s.agent for s in swarm.runtime.list(name) if s.state == "running"}
        hooked = {a for a in FIRST_WAVE if a in running and town.agent(a).metadata.get("hook")}
        on = {nodes[a] for a in FIRST_WAVE}
        return nodes if hooked == set(FIRST_WAVE) and on == set(swarm.workers) else None  # type: ignore[return-value]

    try:
        nodes = until(placed, 300, "the first four polecats running on both worker nodes", every_s=1.0)
    except AssertionError as exc:
        seen = {s.agent: (s.state, s.reason, swarm.runtime.node_of(name, s.agent)) for s in swarm.runtime.list(name)}
        logs = {a: swarm.runtime.logs(name, a, 20)[-1500:] for a in seen}
        raise AssertionError(f"{exc}\nservices: {seen}\nlogs: {logs}") from None
    # An emergency stop freezes them where they run: each task's container paused on its node; thaw resumes.
    town.estop(OP, "swarm freeze check")
    assert sorted(town.paused_containers(OP) or []) == sorted(FIRST_WAVE)
    for agent, node in nodes.items():
        assert paused_on_node(swarm, name, agent, node), f"{agent} is not paused on {node}"
    town.thaw(OP, "checked")
    assert town.paused_containers(OP) == []
    assert not any(paused_on_node(swarm, name, agent, node) for agent, node in nodes.items())
    doomed = swarm.workers[0]
    lost = sorted(a for a, n in nodes.items() if n == doomed)  # held: none of them can finish before the kill
    lost_beads = {town.agent(a).metadata["hook"] for a in lost}
    swarm.kill(doomed)
    for agent in FIRST_WAVE:
        if agent not in lost:
            release(town, agent)

    def all_merged() -> bool:
        return all((b := town.bead_show(OP, bead)).status.value == "done" and not b.awaiting_merge for bead in beads)

    until(all_merged, 420, "all six beads merged on main", every_s=2.0)

    merged = town.merge_list(OP, state=[MergeState.merged.value], limit=100)
    assert sorted(r.bead_id for r in merged) == sorted(beads)  # each bead landed exactly once
    log = "\n".join(town.rig_log(OP, "sample", limit=50))
    assert all(log.count(bead) == 1 for bead in beads), log
    survivor = swarm.workers[1]
    for request in merged:
        if request.bead_id in lost_beads:
            # Finished by a polecat on the other node, not by the one that died with its node.
            assert request.agent not in lost
            assert swarm.runtime.node_of(name, request.agent) == survivor
    for agent in lost:
        assert town.agent(agent).metadata.get("exit_reason") == "killed"
    requeued = {e.bead_id for e in town.events(OP, limit=10_000) if e.verb == Verb.bead_released}
    assert lost_beads <= requeued

    # A nudge to an ended polecat resumes its Claude Code session on whatever node the swarm picks: the
    # transcript came back from the town (its session branch), so the same conversation goes on.
    again = next(a for a in FIRST_WAVE if a not in lost)
    text = "Resume check 5d1e: say what you did."
    town.nudge(OP, again, text)

    def resumed_and_ended() -> bool:
        agent = town.agent(again)
        return int(str(agent.metadata.get("resumes") or 0)) == 1 and agent.state.value == "exited"

    until(resumed_and_ended, 180, f"{again} resumed and ended again", every_s=1.0)
    assert town.agent(again).metadata.get("exit_reason") == "ok", swarm.runtime.logs(name, again, 40)
    asked = [Conversation(r.body) for r in list(standin.requests) if r.path == "/v1/messages"]
    last = [c for c in asked if agent_named_in(c) == again][-1]
    assert is_resumed(last) and text in last.last_user_text
    earlier = [b.get("name") for m in last.messages if isinstance(m.get("content"), list) for b in m["content"]]
    assert "mcp__gastown__bead_complete" in earlier
