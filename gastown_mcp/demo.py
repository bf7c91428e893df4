"""The main job for `make demo`: a mayor and simulated polecats working a town over real MCP HTTP.

`run_demo()` makes a town in a temporary directory, serves it with uvicorn on an ephemeral 127.0.0.1 port,
has the mayor plan beads as an MCP client, then lets polecats claim, work and complete them concurrently.
`serve_http(town)` and `connect_http(url, token)` are reused by the server tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp_types import CallToolResult
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gastown_mcp import assemble
from gastown_mcp.models import NUDGE_MARK, Verb
from gastown_mcp.server.client import connect_http, nudges_in, result_text, serve_http
from gastown_mcp.town import Town, operator


def make_town(town_dir: Path, name: str = "demo") -> Town:
    return assemble.scratch_town(town_dir, name)


# -- the demo --------------------------------------------------------------------------------------
@dataclass
class DemoResult:
    total: int = 0
    done: int = 0
    elapsed: float = 0.0
    completed_by: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    double_claims: int = 0
    takeovers: int = 0
    nudge: str | None = None
    side_bead: str | None = None
    third_done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.done == self.total and self.double_claims == 0 and self.takeovers == 0


class ToolFailed(Exception):
    """A demo tool call returned an error the demo did not expect."""


async def _call(client: Client, tool: str, args: dict[str, Any] | None = None) -> CallToolResult:
    result = await client.call_tool(tool, args or {})
    if result.is_error:
        raise ToolFailed(f"{tool} failed: {result_text(result)}")
    return result


def _data(result: CallToolResult) -> dict[str, Any]:
    if result.structured_content is not None:
        return dict(result.structured_content)
    return dict(json.loads(result_text(result).split("\n" + NUDGE_MARK)[0]))


async def _plan(mayor: Client, beads: int) -> int:
    """The mayor's plan: epics with children (each epic waits on its children), chains, loose tasks."""
    created = 0

    async def create(title: str, **kw: Any) -> str:
        nonlocal created
        created += 1
        return str(_data(await _call(mayor, "bead_create", {"title": title, **kw}))["id"])

    epics = max(1, beads // 13)
    for e in range(epics):
        epic = await create(f"Epic {e + 1}: ship feature area {e + 1}", type="epic", priority=1)
        for c in range(5):
            child = await create(f"Epic {e + 1} part {c + 1}", parent=epic, priority=c % 3 + 1)
            await _call(mayor, "bead_link", {"id": epic, "other": child, "kind": "blocks"})
    chains = max(1, beads // 13)
    for ch in range(chains):
        prev: str | None = None
        for step in range(4):
            prev = await create(
                f"Migration {ch + 1} step {step + 1}",
                type="chore",
                blocked_by=[prev] if prev else [],
                priority=2,
            )
    n = 0
    while created < beads:
        n += 1
        await create(f"Fix bug #{n}", type="bug", priority=n % 5)
    return created


async def _polecat(
    url: str,
    name: str,
    token: str,
    result: DemoResult,
    progress: Progress,
    task: Any,
    work: tuple[float, float],
    rng: random.Random,
    log_side_work: bool,
) -> None:
    async def call(tool: str, args: dict[str, Any], *, check: bool = True) -> CallToolResult:
        res = await (_call(client, tool, args) if check else client.call_tool(tool, args))
        for line in nudges_in(res):
            result.nudge = line
            progress.console.print(f"  [bold yellow]{name} got: {line}[/]")
        return res

    async with connect_http(url, token) as client:
        while True:
            claim = await call("bead_claim", {}, check=False)
            if claim.is_error:
                result.refused += 1
                active = await call("bead_list", {"status": ["open", "in_progress"], "limit": 1})
                if not _data(active)["beads"]:
                    return
                await anyio.sleep(0.05)  # others still hold work that may unblock more
                continue
            bead = _data(claim)
            await anyio.sleep(rng.uniform(*work))  # the "work"
            if log_side_work and result.side_bead is None:
                side = await call("bead_create", {"title": f"Flaky test found while on {bead['id']}", "type": "bug"})
                result.side_bead = str(_data(side)["id"])
                result.total += 1
                progress.update(task, total=result.total)
                progress.console.print(f"  [magenta]{name}[/] logged side work {result.side_bead}")
            await call("bead_complete", {"id": bead["id"], "summary": f"{name} finished {bead['title']!r}"})
            result.completed_by[name] += 1
            result.done += 1
            if result.done * 3 >= result.total:
                result.third_done.set()
            progress.advance(task)
            progress.console.print(f"[green]✓[/] {bead['id']:<10} {bead['title']:<36} [dim]{name}[/]")


async def _mayor_nudge(mayor: Client, result: DemoResult, target: str) -> None:
    with anyio.fail_after(60):
        await result.third_done.wait()
    await _call(mayor, "town_nudge", {"to": target, "text": "Please keep summaries short and mention the branch."})


def _verify(town: Town, result: DemoResult) -> None:
    op = operator()
    events = town.events(op, limit=1_000_000)
    claims = Counter(e.bead_id for e in events if e.verb in (Verb.bead_claimed, Verb.bead_taken_over))
    result.double_claims = sum(1 for n in claims.values() if n > 1)
    result.takeovers = sum(1 for e in events if e.verb == Verb.bead_taken_over)
    status = town.status(op).beads_by_status
    result.total = sum(status.values())
    result.done = int(status.get("done", 0))


def summary_table(result: DemoResult) -> Table:
    table = Table(title="Gas Town demo")
    table.add_column("polecat")
    table.add_column("beads completed", justify="right")
    for name, n in sorted(result.completed_by.items()):
        table.add_row(name, str(n))
    table.add_section()
    table.add_row("[bold]beads done[/]", f"{result.done}/{result.total}")
    table.add_row("elapsed", f"{result.elapsed:.2f} s")
    table.add_row("claims refused (nothing ready)", str(result.refused))
    table.add_row("double-claims (from events)", str(result.double_claims))
    table.add_row("lease takeovers", str(result.takeovers))
    table.add_row("side-work bead", result.side_bead or "-")
    return table


async def run_demo(
    *,
    polecats: int = 8,
    beads: int = 40,
    work: tuple[float, float] = (0.05, 0.3),
    console: Console | None = None,
    town_dir: Path | None = None,
    seed: int | None = None,
) -> DemoResult:
    """Run the whole demo and return what happened (verified from the event log)."""
    console = console or Console()
    rng = random.Random(seed)
    with contextlib.ExitStack() as stack:
        if town_dir is None:
            town_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gastown-demo-"))) / "town"
        town_dir.mkdir(parents=True, exist_ok=True)
        town = make_town(town_dir)
        stack.callback(town.close)
        op = operator()
        mayor_token = town.agent_add(op, "mayor", "mayor").token
        names = [f"polecat-{i + 1}" for i in range(polecats)]
        tokens = {n: town.agent_add(op, n, "polecat").token for n in names}
        url = stack.enter_context(serve_http(town))
        console.print(f"[bold]Gas Town[/] at {town_dir} serving MCP on {url}")

        result = DemoResult()
        started = time.perf_counter()
        async with connect_http(url, mayor_token) as mayor:
            result.total = await _plan(mayor, beads)
            console.print(f"mayor planned {result.total} beads; {polecats} polecats start work")
            columns = (TextColumn("[bold]beads"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("beads", total=result.total)
                async with anyio.create_task_group() as tg:
                    for i, name in enumerate(names):
                        tg.start_soon(
                            _polecat,
                            url,
                            name,
                            tokens[name],
                            result,
                            progress,
                            task,
                            work,
                            random.Random(rng.random()),
                            i == 0,
                        )
                    tg.start_soon(_mayor_nudge, mayor, result, names[-1])
        result.elapsed = time.perf_counter() - started
        _verify(town, result)
    console.print(summary_table(result))
    if result.nudge is None:
        console.print("[yellow]the nudge was not seen (the polecat finished before it arrived)[/]")
    console.print("[bold green]all beads done, none double-worked[/]" if result.ok else "[bold red]demo FAILED[/]")
    return result


def main() -> int:
    result = anyio.run(lambda: run_demo())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
