"""`gastown plan`, `gastown plan apply FILE`, `gastown convoy list|show` and `gastown bead import FILE`.

A plan is made by the refinery planner through the running town's gateway (`--from FILE` reads a goal from a
file), shown as a tree with `--dry-run` (or JSON with `--json`, which `plan apply` takes back after review).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from gastown_mcp.cli import beads
from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, open_town
from gastown_mcp.errors import InvalidInput
from gastown_mcp.town.plans import Convoy, Plan

convoy_app = typer.Typer(help="Convoys: plans of beads and how far they got.", no_args_is_help=True)
Rig = Annotated[str | None, typer.Option("--rig", help="the rig the plan's beads are for (labels rig:<name>)")]


def _plan_tree(plan: Plan) -> Tree:
    tree = Tree(f"[bold]{plan.title}[/] ({len(plan.items)} beads)")
    for item in plan.items:
        after = f" after {', '.join(item.depends_on)}" if item.depends_on else ""
        node = tree.add(f"[bold]{item.key}[/] {item.title} (p{item.priority}, complexity {item.complexity}){after}")
        for c in item.acceptance:
            node.add(f"{c.text}  [dim]verify: {c.verify}[/]")
    return tree


def _convoy_table(convoy: Convoy) -> Table:
    table = Table("bead", "key", "title", "state", "assignee", title=f"{convoy.id} {convoy.title}")
    for b in convoy.beads:
        table.add_row(b.id, b.key or "", b.title, b.state, b.assignee or "")
    return table


def _read_json(path: Path) -> Any:
    """A plan (JSON object) or plan items (JSONL, one per line; a `.jsonl` file is always read as lines)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        if path.suffix != ".jsonl":
            try:
                data = json.loads(text)
                return [data] if isinstance(data, dict) and "key" in data and "items" not in data else data
            except json.JSONDecodeError:
                pass
        return [json.loads(line) for line in lines]
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path} is neither JSON nor JSONL: {exc}") from None


def plan(
    goal: Annotated[list[str], typer.Argument(help='the goal, or "apply FILE" to create a reviewed plan')],
    rig: Rig = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the plan; create nothing")] = False,
    from_file: Annotated[Path | None, typer.Option("--from", help="read the goal from this file")] = None,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Turn a goal into a checked plan of beads (a convoy) with the refinery planner."""
    with open_town(town_dir) as town:
        who = actor(town, as_agent)
        if len(goal) == 2 and goal[0] == "apply":
            data = _read_json(Path(goal[1]))
            plan_data = data.get("plan", data) if isinstance(data, dict) else data
            convoy = town.plan_apply(who, plan_data, rig)
            emit(as_json, convoy, lambda c: c.print(_convoy_table(convoy)))
            return
        text = from_file.read_text() if from_file else " ".join(goal)
        result = town.plan_create(who, text, rig, dry_run)
    if as_json:
        emit(True, result.plan if dry_run else result, lambda c: None)
        return
    console = Console()
    console.print(_plan_tree(result.plan))
    console.print(
        f"{result.rounds} planner request(s), {result.input_tokens} input + {result.output_tokens} output tokens, "
        f"{result.seconds:.2f} s"
    )
    if result.convoy is not None:
        console.print(_convoy_table(result.convoy))


@convoy_app.command("list")
def convoy_list(
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Convoys, newest first, with their progress."""
    with open_town(town_dir) as town:
        found = town.convoy_list(actor(town, as_agent), limit)

    def render(console: Console) -> None:
        table = Table(
            "convoy", "title", "rig", "beads", "open", "in progress", "awaiting merge", "merged", "cancelled", "landed"
        )  # fmt: skip
        for c in found:
            p = c.progress
            table.add_row(
                c.id, c.title, c.rig or "", str(len(c.beads)), str(p["open"]), str(p["in_progress"]),
                str(p["awaiting_merge"]), str(p["merged"]), str(p["cancelled"]),
                "yes" if c.landed else "cancelled" if c.cancelled else "",
            )  # fmt: skip
        console.print(table)

    emit(as_json, found, render)


@convoy_app.command("show")
def convoy_show(convoy_id: str, town_dir: TownDir = None, as_agent: AsAgent = None, as_json: Json = False) -> None:
    """One convoy: each bead and its state."""
    with open_town(town_dir) as town:
        convoy = town.convoy_show(actor(town, as_agent), convoy_id)
    emit(as_json, convoy, lambda c: c.print(_convoy_table(convoy)))


def bead_import(
    file: Path,
    title: Annotated[str, typer.Option("--title", help="the convoy's title for a JSONL file")] = "Imported beads",
    rig: Rig = None,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Create beads written by hand: a plan JSON file, or JSONL with one plan item per line (checked like a plan)."""
    data = _read_json(file)
    plan_data = data if isinstance(data, dict) else {"title": title, "items": data}
    with open_town(town_dir) as town:
        convoy = town.plan_apply(actor(town, as_agent), plan_data, rig)
    emit(as_json, convoy, lambda c: c.print(_convoy_table(convoy)))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    beads.app.command("import")(bead_import)
    app.add_typer(convoy_app, name="convoy")
