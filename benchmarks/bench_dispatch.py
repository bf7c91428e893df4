"""Dispatch latency: from a bead becoming ready to its polecat's first MCP tool call, through a real town.

    .venv/bin/python benchmarks/bench_dispatch.py [--beads 50] [--waves-of 1 10] [--intervals 2.0 0.2]
        [--polecats tiny claude]

A real `TownProcess` (Docker runtime, `[scheduler] auto = true`, witness every 0.5 s, one rig with no gates)
dispatches by itself; nothing here slings. Each dependent bead waits on a blocker bead that the scheduler never
takes (it is labelled for another rig). Readiness is the moment the benchmark cancels that blocker through the
Town API (`bead_update status=cancelled`, which releases its dependents at once): the `at` of the blocker's
`bead.cancelled` event. The first MCP call is the polecat's `last_seen`, set by its first tool call with its own
token. Between them, per bead, from the store's events and the container's own clock:
  tick wait   ready -> `agent.created`: the scheduler's next tick, and in a burst the launches before it
  prepare     -> `agent.token_rotated`: the agent's repository (a clone borrowing the rig's objects), its
              ~/.claude, the claim renewed, credentials
  container   -> the command's first line in the container (`date +%s.%N`): `docker create` + `start`
  first call  -> `last_seen`: python3 starts, MCP initialize, then `town_heartbeat` (Claude Code: its start,
              MCP connect, a model turn from the stand-in, then its first tool call)
By default each polecat runs that tiny command (`sh -c`: date, then python3 making the MCP calls, then sleep)
instead of Claude Code, so the figure is the town's dispatch, not a model's; `--polecats claude` runs Claude Code
(the image's default command) with the scripted stand-in as model, and times its first tool call instead.
An unblock is not intent, so the scheduler only sees it on its next tick (`[scheduler] interval_seconds`); each
interval in `--intervals` gets a town of its own. Waves of 1 (a random phase of the tick cycle before each
unblock) measure one bead at a time; waves of 10 release ten beads at once, within `max_polecats` = 10. After a
wave the benchmark cancels the beads and stops their polecats, outside the measured window.
Needs root (firewall rules), a running engine and the agent image (`python -m gastown_mcp.runtime.image`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _report import write_report
from anyio.from_thread import BlockingPortal, start_blocking_portal

from gastown_mcp import assemble, serving
from gastown_mcp.config import (
    GatewaySection,
    LeaseSection,
    RigSection,
    RuntimeSection,
    SchedulerSection,
    ServerSection,
    Settings,
    TownSection,
    WitnessSection,
)
from gastown_mcp.daemon import TownProcess
from gastown_mcp.models import Agent
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import ContainerStatus, LaunchSpec
from gastown_mcp.standin.app import build_standin
from gastown_mcp.standin.scripts import script_named
from gastown_mcp.town import Town
from gastown_mcp.town import operator as make_operator

RIG = "bench"
OP = make_operator()
MAX_POLECATS = 10
# MCP over streamable HTTP as any client does it: initialize, initialized, then one tool call with the token.
FIRST_CALL = r"""
import json, os, urllib.request
url, token = os.environ["GASTOWN_MCP_URL"], os.environ["GASTOWN_TOKEN"]
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json",
           "Accept": "application/json, text/event-stream"}
def post(body, extra=None):
    req = urllib.request.Request(url, json.dumps(body).encode(), {**headers, **(extra or {})})
    with urllib.request.urlopen(req, timeout=20) as resp:
        return resp.headers.get("mcp-session-id"), resp.read().decode()
def result(text):
    for line in text.splitlines():
        if line.startswith("data:"):
            return json.loads(line[5:])
    return json.loads(text)
sid, text = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
    "capabilities": {}, "clientInfo": {"name": "bench-dispatch", "version": "1"}}})
extra = {"mcp-session-id": sid or "", "mcp-protocol-version": result(text)["result"]["protocolVersion"]}
post({"jsonrpc": "2.0", "method": "notifications/initialized"}, extra)
_, text = post({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
    "params": {"name": "town_heartbeat", "arguments": {}}}, extra)
print("called", "error" if result(text).get("error") else "ok", flush=True)
"""
TINY = ("sh", "-c", 'echo "start $(date +%s.%N)"; python3 -c "$0"; exec sleep 600', FIRST_CALL)
CLAUDE = "Claude Code (the image's default command), the scripted stand-in as model; its first call is bead_show"
PARTS = ("tick_wait_s", "prepare_s", "container_s", "first_call_s")
START_LINE = re.compile(r"^start (\d+\.\d+)$", re.M)


class TinyPolecats(DockerRuntime):
    """The Docker runtime, except that a polecat launched with no command runs the tiny first-call command."""

    def launch(self, spec: LaunchSpec) -> ContainerStatus:
        if spec.role == "polecat" and not spec.command:
            spec = dataclasses.replace(spec, command=TINY)
        return super().launch(spec)


def epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    run = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    (path / "README.md").write_text("sample\n")
    subprocess.run(["git", "add", "."], cwd=path, check=True)
    subprocess.run([*run, "commit", "-qm", "readme"], cwd=path, check=True)
    return path


@contextlib.contextmanager
def running_town(root: Path, interval: float, claude: bool, portal: BlockingPortal) -> Iterator[TownProcess]:
    """A `gastown up` town on the portal's event loop; on exit it shuts down and its containers and network go."""
    name = f"disp{secrets.token_hex(3)}"
    with contextlib.ExitStack() as stack:
        standin_url = stack.enter_context(serving.serve_in_thread(build_standin(script_named("polecat")).app))
        town_dir = root / name
        town_dir.mkdir(parents=True)
        settings = Settings(
            town_dir=town_dir,
            town=TownSection(name=name),
            lease=LeaseSection(seconds=300),
            server=ServerSection(port=0),
            gateway=GatewaySection.model_validate(
                {
                    "port": 0,
                    "default_upstream": "standin",
                    "upstreams": {"standin": {"base_url": standin_url, "key_env": "STANDIN_KEY"}},
                }
            ),
            runtime=RuntimeSection(),
            witness=WitnessSection(interval_seconds=0.5, idle_seconds=300),
            scheduler=SchedulerSection(auto=True, interval_seconds=interval, max_polecats=MAX_POLECATS),
            rigs={RIG: RigSection()},
        )
        with contextlib.closing(assemble.open_town(settings)) as setup:
            setup.rig_add(OP, RIG, str(git_repo(root / f"{name}-src")))
        runtime = DockerRuntime.connect() if claude else TinyPolecats.connect()
        process = TownProcess(settings, {"STANDIN_KEY": "standin-key"}, runtime, teardown=True)
        started: list[bool] = []
        running = portal.start_task_soon(process.run, lambda _state: started.append(True))
        try:
            deadline = time.monotonic() + 60
            while not started and not running.done() and time.monotonic() < deadline:
                time.sleep(0.05)
            if running.done():
                running.result()  # raises what stopped it
            assert started, "the town did not start within 60 s"
            yield process
        finally:
            portal.call(process.stop)
            with contextlib.suppress(Exception):
                running.result(timeout=120)
            runtime.cleanup(name)
            runtime.remove_network(name)
            runtime.close()


def polecat_of(town: Town, beads: set[str]) -> dict[str, Agent]:
    return {str(a.metadata.get("hook")): a for a in town.agents(OP, "polecat") if a.metadata.get("hook") in beads}


def wave(town: Town, runtime: DockerRuntime, size: int, interval: float, timeout_s: float) -> list[dict[str, Any]]:
    """Release `size` beads at once by cancelling their blocker; time each one to its polecat's first call."""
    blocker = town.bead_create(OP, "blocker", labels=["rig:elsewhere"]).id
    beads = [town.bead_create(OP, f"dependent {i}", blocked_by=[blocker]).id for i in range(size)]
    time.sleep(random.uniform(0, interval))  # a random phase of the scheduler's tick cycle
    town.bead_update(OP, blocker, status="cancelled", reason="released by the benchmark")
    ready = next(e for e in town.events(OP, bead_id=blocker) if e.verb == "bead.cancelled")
    t_ready = epoch(ready.at)
    deadline = time.monotonic() + timeout_s
    seen: dict[str, Agent] = {}
    while len(seen) < size and time.monotonic() < deadline:
        seen = {b: a for b, a in polecat_of(town, set(beads)).items() if a.last_seen}
        time.sleep(0.01)
    agents = polecat_of(town, set(beads))
    rows = []
    for bead in beads:
        agent = agents.get(bead)
        row: dict[str, Any] = {"bead": bead, "agent": agent.name if agent else None, "total_s": None}
        if agent is not None:
            at = {e.verb: epoch(e.at) for e in town.events(OP, agent=agent.name)}
            logs = runtime.logs(town.settings.town.name, agent.name, tail=50)
            start = START_LINE.search(logs)
            marks = [t_ready, at.get("agent.created"), at.get("agent.token_rotated")]
            marks.append(float(start.group(1)) if start else None)
            marks.append(epoch(agent.last_seen) if agent.last_seen else None)
            names = PARTS
            for key, a, b in zip(names, marks[:-1], marks[1:], strict=True):
                row[key] = round(b - a, 4) if a is not None and b is not None else None
            if marks[2] is not None and marks[4] is not None:  # Claude Code prints no start line: both together
                row["container_and_call_s"] = round(marks[4] - marks[2], 4)
            row["total_s"] = round(marks[-1] - t_ready, 4) if marks[-1] is not None else None
        rows.append(row)
    for bead in beads:  # tidy up outside the measured window: the bead first, so the stop does not requeue it
        with contextlib.suppress(Exception):
            town.bead_update(OP, bead, status="cancelled", reason="measured")
    for agent in agents.values():
        with contextlib.suppress(Exception):
            town.stop(OP, agent.name, "measured")
    return rows


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals = [r["total_s"] for r in rows if r["total_s"] is not None]
    out: dict[str, Any] = {"measured": len(totals), "missing": len(rows) - len(totals)}
    if totals:
        out |= {"p50_s": round(statistics.median(totals), 3), "p90_s": round(pct(totals, 0.9), 3)}
        out["max_s"] = round(max(totals), 3)
    for part in (*PARTS, "container_and_call_s"):
        values = [r[part] for r in rows if r.get(part) is not None]
        if values:
            out[f"median_{part}"] = round(statistics.median(values), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--beads", type=int, default=50, help="beads per wave size and interval")
    parser.add_argument("--waves-of", type=int, nargs="+", default=[1, 10], help="beads released at once")
    parser.add_argument("--intervals", type=float, nargs="+", default=[2.0, 0.2], help="[scheduler] interval_seconds")
    parser.add_argument(
        "--polecats", nargs="+", choices=["tiny", "claude"], default=["tiny"], help="tiny command or Claude Code"
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds a wave may take at most")
    args = parser.parse_args()
    if max(args.waves_of) > MAX_POLECATS:
        parser.error(f"a wave larger than max_polecats ({MAX_POLECATS}) would measure the slots, not dispatch")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp, start_blocking_portal() as portal:
        for polecat, interval in [(p, i) for p in args.polecats for i in args.intervals]:
            with running_town(Path(tmp), interval, polecat == "claude", portal) as process:
                assert process.town is not None and process.town._fleet is not None
                town, runtime = process.town, process.town._fleet.runtime
                assert isinstance(runtime, DockerRuntime)
                for size in args.waves_of:
                    rows: list[dict[str, Any]] = []
                    while len(rows) < args.beads:
                        rows += wave(town, runtime, min(size, args.beads - len(rows)), interval, args.timeout)
                        while any(n for n in town.polecats_by_rig(OP).values()):
                            time.sleep(0.05)  # the stopped polecats free their slots before the next wave
                    summary = {"polecat": polecat, "interval_s": interval, "wave": size, "beads": len(rows)}
                    summary |= summarise(rows)
                    print(summary, flush=True)
                    results.append({**summary, "rows": rows})
    head = f"{'polecat':>7} {'interval s':>10} {'wave':>5} {'p50 s':>7} {'p90 s':>7} {'max s':>7}"
    print(head + "  medians: tick / prepare / container / call")
    for r in results:
        parts = " / ".join(str(r.get(f"median_{part}")) for part in PARTS)
        print(
            f"{r['polecat']:>7} {r['interval_s']:>10} {r['wave']:>5} "
            f"{r.get('p50_s', 'nan'):>7} {r.get('p90_s', 'nan'):>7} {r.get('max_s', 'nan'):>7}  {parts}"
        )
    write_report(
        "dispatch",
        results,
        file="bench_dispatch",
        polecats={"tiny": "sh -c: date, then python3 making MCP initialize + town_heartbeat", "claude": CLAUDE},
        measured_from="the blocker's bead.cancelled event (dependents ready at once)",
        measured_to="the polecat's last_seen (its first tool call with its own token)",
        max_polecats=MAX_POLECATS,
        spawn_per_tick=SchedulerSection().spawn_per_tick,
    )


if __name__ == "__main__":
    main()
