"""Dispatch latency and beads per minute: agents on a 2-node Docker Swarm vs the local Docker backend.

One run, same beads, same model stand-in (the scripted polecat: read the bead, write a file, commit,
complete), same limits and fleet size: first a town with `[runtime] backend = "docker"`, then the same town on
a real 2-worker swarm made on this machine (worker nodes are containers running their own engine, as in
`make test-swarm`; the agent image is loaded on each by `gastown swarm load-image`). Per backend:

- launch: an agent's `agent.starting` -> `agent.running` (the backend starting its container; on the swarm a
  service is scheduled, its task started on a node, and the repository cloned over git HTTP first);
- dispatch: a bead of the first wave created -> its polecat running (the scheduler's pick plus the launch);
- beads/min: all beads created -> all merged on main.

Needs Docker, root and the agent image (`make image`); about 6-10 minutes here.
Usage: .venv/bin/python benchmarks/bench_swarm.py [--beads 8] [--polecats 4]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _report import write_report
from anyio.from_thread import start_blocking_portal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from e2e.harness import BackgroundTown, git_repo
from swarm.nodes import local_swarm

from gastown_mcp import rigs
from gastown_mcp.config import Settings
from gastown_mcp.models import Verb
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE, Runtime
from gastown_mcp.serving import serve
from gastown_mcp.standin import build_standin
from gastown_mcp.standin.polecat import Polecat
from gastown_mcp.town import operator

OP = operator()


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_town(backend: str, runtime: Runtime, beads: int, polecats: int, image: str) -> dict[str, Any]:
    """A town on `runtime` works `beads` beads with at most `polecats` at a time; its figures."""
    standin = build_standin(Polecat())
    name = f"bs{secrets.token_hex(3)}"
    with (
        tempfile.TemporaryDirectory(prefix="gastown-bench-swarm-") as tmp,
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serve(standin.app)) as standin_url,
    ):
        town_dir = Path(tmp) / "town"
        town_dir.mkdir()
        settings = Settings.model_validate(
            {
                "town_dir": town_dir,
                "town": {"name": name},
                "lease": {"seconds": 300},
                "server": {"port": 0},
                "gateway": {
                    "port": 0,
                    "default_upstream": "standin",
                    "upstreams": {"standin": {"base_url": standin_url, "key_env": "STANDIN_KEY"}},
                },
                "runtime": {"backend": backend, "image": image, "limits": {"polecat": {"memory_mb": 512, "cpus": 0.5}}},
                "scheduler": {
                    "auto": True,
                    "max_polecats": polecats,
                    "spawn_per_tick": polecats,
                    "interval_seconds": 0.5,
                },
                "witness": {"interval_seconds": 1, "idle_seconds": 3600},
            }
        )
        rigs.add_rig(town_dir, "sample", str(git_repo(Path(tmp) / "sample")))
        process = BackgroundTown(settings, {"STANDIN_KEY": "standin-key"}, runtime)
        ready = threading.Event()
        running = portal.start_task_soon(process.run, lambda _state: ready.set())
        running.add_done_callback(lambda _future: ready.set())
        try:
            if not ready.wait(120) or running.done():
                running.result(timeout=1)
                raise SystemExit(f"the {backend} town did not start")
            town = process.town
            assert town is not None
            started = time.time()
            ids = [town.bead_create(OP, f"Write note {i}").id for i in range(beads)]
            deadline = time.monotonic() + 900
            while not all(
                (b := town.bead_show(OP, bead)).status.value == "done" and not b.awaiting_merge for bead in ids
            ):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {backend} town did not merge {beads} beads within 900 s")
                time.sleep(0.5)
            seconds = time.time() - started
            events = town.events(OP, limit=100_000)
        finally:
            portal.call(process.stop)
            running.result(timeout=180)
            runtime.cleanup(name)
            runtime.remove_network(name)
    starting: dict[str, float] = {}
    up: dict[str, float] = {}
    created: dict[str, float] = {}
    claimed: dict[str, str] = {}
    for e in sorted(events, key=lambda e: e.id):  # the first of each
        if e.verb == Verb.agent_starting and e.agent:
            starting.setdefault(e.agent, _at(e.at))
        elif e.verb == Verb.agent_running and e.agent:
            up.setdefault(e.agent, _at(e.at))
        elif e.verb == Verb.bead_created and e.bead_id:
            created.setdefault(e.bead_id, _at(e.at))
        elif e.verb == Verb.bead_claimed and e.bead_id and e.agent:
            claimed.setdefault(e.bead_id, e.agent)
    launch = [up[a] - starting[a] for a in up if a in starting]
    first_wave = ids[:polecats]
    dispatch = [up[claimed[b]] - created[b] for b in first_wave if b in claimed and claimed[b] in up]
    return {
        "backend": backend,
        "beads": beads,
        "polecats": polecats,
        "agents_launched": len(launch),
        "launch_p50_s": round(statistics.median(launch), 2),
        "launch_max_s": round(max(launch), 2),
        "dispatch_p50_s": round(statistics.median(dispatch), 2),
        "dispatch_max_s": round(max(dispatch), 2),
        "seconds": round(seconds, 1),
        "beads_per_minute": round(beads / seconds * 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--beads", type=int, default=8)
    parser.add_argument("--polecats", type=int, default=4)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    args = parser.parse_args()
    local = DockerRuntime.connect()
    image = args.image
    rows = [run_town("docker", local, args.beads, args.polecats, image)]
    print(json.dumps(rows[-1]))
    with local_swarm(local.client, image) as swarm:  # the same image, under the swarm's own tag
        rows.append(run_town("swarm", swarm.runtime, args.beads, args.polecats, swarm.image))
    print(json.dumps(rows[-1]))
    ratios = {
        "launch_p50_swarm_over_local": round(rows[1]["launch_p50_s"] / rows[0]["launch_p50_s"], 2),
        "dispatch_p50_swarm_over_local": round(rows[1]["dispatch_p50_s"] / rows[0]["dispatch_p50_s"], 2),
        "beads_per_minute_swarm_over_local": round(rows[1]["beads_per_minute"] / rows[0]["beads_per_minute"], 2),
    }
    print(f"{'backend':>8} {'launch p50':>11} {'max':>6} {'dispatch p50':>13} {'max':>6} {'s':>6} {'beads/min':>10}")
    for r in rows:
        print(
            f"{r['backend']:>8} {r['launch_p50_s']:>11} {r['launch_max_s']:>6} {r['dispatch_p50_s']:>13} "
            f"{r['dispatch_max_s']:>6} {r['seconds']:>6} {r['beads_per_minute']:>10}"
        )
    print(json.dumps(ratios))
    write_report("swarm", rows, file="bench_swarm", ratios=ratios)


if __name__ == "__main__":
    main()
