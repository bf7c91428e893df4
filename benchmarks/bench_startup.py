"""Start-up time of the `gastown` command against `python -c pass`, in one run, as whole processes.

Times, round after round in turn: `python -c pass` (the reference), `gastown bead ready`, `gastown status` (both
against a real town made here, with beads and agents in it; as the operator both take the quick path,
gastown_mcp/cli/quick.py, which the run checks), `gastown bead ready --as polecat-0` (as an agent: the quick
path with its lease renewal, a write), the same `bead ready` through the typer command and the full town (what
it took before the quick path) and `gastown serve --as mayor` from its spawn to
its answer to `initialize` over stdio, through the real `mcp` client (the JSON-RPC handshake): with the answer
an earlier start cached (the front answers before the SDK loads), to its answer to the `tools/list` after it
(the server proper is up), and with no cached answer (a town's first start). Wall time is spawn to exit (to the
answer, for `serve`); CPU is the child's user + system time from the kernel. Ratios are
taken round by round, so a machine that speeds up or slows down during the run moves both sides.
An installed package carries its bytecode; the source tree is byte-compiled first so a checkout is measured
the same way. Run: `.venv/bin/python benchmarks/bench_startup.py` (figures to stdout and to
benchmarks/results/bench_startup.json).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from _report import write_report
from mcp import Client, StdioServerParameters

import gastown_mcp
from gastown_mcp.assemble import open_town
from gastown_mcp.cli.stdio_front import CACHE_DIR
from gastown_mcp.config import load_settings
from gastown_mcp.models import Role
from gastown_mcp.town import operator

GASTOWN = str(Path(sys.executable).with_name("gastown"))

# The floor under any typer command: a one-command app (typer builds pydantic adapters for its options) that
# prints a rich table read from the town database. `import mcp` is the floor under a server's first answer;
# importing the town (to check the agent) is the floor under the stdio front's.
TYPER_FLOOR = """
import sqlite3
import typer
from rich.console import Console
from rich.table import Table
app = typer.Typer()
@app.callback()
def root() -> None: ...
@app.command()
def ready(limit: int = typer.Option(20, "--limit"), town: str = typer.Option(".", "--town"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    table = Table("id", "title")
    for row in sqlite3.connect(town + "/town.db").execute("SELECT id, title FROM beads LIMIT ?", (limit,)):
        table.add_row(*row)
    Console().print(table)
app()
"""


# The typer command itself (what `gastown bead ready` ran before the quick path, and still runs for other forms).
TYPER_APP = "import sys\nfrom gastown_mcp.cli import build_app\nbuild_app()(args=sys.argv[1:], prog_name='gastown')"

SERVE_ROWS = (
    "serve --as mayor: initialize",
    "serve --as mayor: tools/list",
    "serve: initialize, none cached",
)


def make_town(root: Path, beads: int) -> Path:
    """A town made by `gastown init`, then beads (some blocked, some claimed) and agents through `Town`."""
    town_dir = root / "town"
    subprocess.run([GASTOWN, "init", str(town_dir), "--name", "bench"], check=True, capture_output=True)
    town = open_town(load_settings(town_dir))
    try:
        boss = operator()
        town.agent_add(boss, "mayor", Role.mayor)
        polecats = [town.agent_add(boss, f"polecat-{i}", Role.polecat).agent for i in range(5)]
        made = [town.bead_create(boss, f"bead {i}", priority=i % 5).id for i in range(beads)]
        for blocked, blocker in zip(made[1::10], made[::10], strict=False):
            town.bead_link(boss, blocked, blocker, "blocks")
        for polecat, bead_id in zip(polecats, made[2::7], strict=False):
            town.bead_claim(polecat, bead_id)
    finally:
        town.close()
    return town_dir


def run_process(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds from spawn to exit, and the child's CPU seconds (user + system)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}): {err}")
    return wall, usage.ru_utime + usage.ru_stime


async def serve_initialize(town_dir: Path, cached: bool = True) -> tuple[float, float]:
    """Seconds from spawning `gastown serve --as mayor` to its answer to `initialize` (the client is then up),
    and to its answer to `tools/list` (the server proper is up). `cached=False` first removes the answer an
    earlier start cached, so `initialize` waits for the SDK as it does on a town's first start."""
    if not cached:
        shutil.rmtree(town_dir / CACHE_DIR, ignore_errors=True)
    params = StdioServerParameters(command=GASTOWN, args=["serve", "--town", str(town_dir), "--as", "mayor"])
    start = time.perf_counter()
    async with Client(params, mode="legacy") as client:
        answered = time.perf_counter() - start
        tools = await client.list_tools()
        listed = time.perf_counter() - start
        if not tools.tools:
            raise SystemExit("serve answered initialize but lists no tools")
    return answered, listed


def quick_taken(town_dir: Path) -> bool:
    """`quick.run` takes `bead ready` in this town (it gives way, printing nothing, when it cannot)."""
    code = "import sys\nfrom gastown_mcp.cli import quick\nsys.exit(0 if quick.run(sys.argv[1:]) else 1)"
    argv = [sys.executable, "-c", code, "bead", "ready", "--town", str(town_dir)]
    return subprocess.run(argv, capture_output=True).returncode == 0


def summary(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values) * scale, digits),
        "min": round(min(values) * scale, digits),
        "max": round(max(values) * scale, digits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="Rounds; each runs every command once.")
    parser.add_argument("--beads", type=int, default=200, help="Beads in the town.")
    args = parser.parse_args()
    compileall.compile_dir(str(Path(gastown_mcp.__file__).parent), quiet=1)
    with tempfile.TemporaryDirectory(prefix="gastown-startup-") as tmp:
        town_dir = make_town(Path(tmp), args.beads)
        env_town = ["--town", str(town_dir)]
        commands: dict[str, Callable[[], tuple[float, float]]] = {
            "python -c pass": lambda: run_process([sys.executable, "-c", "pass"], town_dir),
            "gastown bead ready": lambda: run_process([GASTOWN, "bead", "ready", *env_town], town_dir),
            "gastown status": lambda: run_process([GASTOWN, "status", *env_town], town_dir),
            "gastown bead ready --as": lambda: run_process(
                [GASTOWN, "bead", "ready", "--as", "polecat-0", *env_town], town_dir
            ),
            "bead ready, typer command": lambda: run_process(
                [sys.executable, "-c", TYPER_APP, "bead", "ready", *env_town], town_dir
            ),
            "floor: typer command + rich": lambda: run_process(
                [sys.executable, "-c", TYPER_FLOOR, "ready", *env_town], town_dir
            ),
            "floor: python -c 'import mcp'": lambda: run_process([sys.executable, "-c", "import mcp"], town_dir),
            # what the stdio front loads before it answers: the town, to check the agent
            "floor: import the town": lambda: run_process(
                [sys.executable, "-c", "import gastown_mcp.assemble"], town_dir
            ),
        }
        wall: dict[str, list[float]] = {name: [] for name in [*commands, *SERVE_ROWS]}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for once in commands.values():  # warm the page cache once
            once()
        if not quick_taken(town_dir):
            raise SystemExit("`gastown bead ready` did not take the quick path: the figures would not be its own")
        anyio.run(serve_initialize, town_dir)
        for _ in range(args.rounds):
            for name, once in commands.items():
                w, c = once()
                wall[name].append(w)
                cpu[name].append(c)
            first, _listed = anyio.run(serve_initialize, town_dir, False)
            answered, listed = anyio.run(serve_initialize, town_dir)
            for name, value in zip(SERVE_ROWS, (answered, listed, first), strict=True):
                wall[name].append(value)
    results = {name: row(wall[name], cpu.get(name), wall["python -c pass"], cpu["python -c pass"]) for name in wall}
    print(f"{args.rounds} rounds, {args.beads} beads; medians [min..max]; ratio = this / python -c pass, per round")
    for name, r in results.items():
        ms, wr = r["wall_ms"], r["wall_ratio"]
        line = f"{name:<30} wall {ms['median']:7.1f} ms  x{wr['median']:5.2f} [{wr['min']}..{wr['max']}]"
        if "cpu_ms" in r:
            line += f"   cpu {r['cpu_ms']['median']:6.1f} ms  x{r['cpu_ratio']['median']:5.2f}"
        print(line)
    load = [round(x, 1) for x in os.getloadavg()]
    print(f"load average {load[0]} {load[1]} {load[2]} on {os.cpu_count()} cpus")
    write_report("bench_startup", results, rounds=args.rounds, beads=args.beads, load_average=load)


def row(
    walls: list[float], cpus: list[float] | None, ref_wall: list[float], ref_cpu: list[float]
) -> dict[str, dict[str, float]]:
    out = {
        "wall_ms": summary(walls, 1000),
        "wall_ratio": summary([w / r for w, r in zip(walls, ref_wall, strict=True)], digits=2),
    }
    if cpus is not None:
        out["cpu_ms"] = summary(cpus, 1000)
        out["cpu_ratio"] = summary([c / r for c, r in zip(cpus, ref_cpu, strict=True)], digits=2)
    return out


if __name__ == "__main__":
    main()
