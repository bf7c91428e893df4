"""`gastown bead ...`: the bead commands, one per `Town.bead_*` method."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gastown_mcp import console
from gastown_mcp.cli import plain
from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, open_town, print_json, text_value
from gastown_mcp.models import BeadSummary

app = typer.Typer(help="Create, find, claim and finish beads (units of work).", no_args_is_help=True)

BeadId = Annotated[str, typer.Argument(help="Bead id, e.g. gt-4f2a.")]
FROM_FILE = " @FILE reads it from a file, - from standard input."
Limit = Annotated[int, typer.Option("--limit", "-n", help="At most this many (1-500).")]


@app.command("create")
def create(
    title: Annotated[str, typer.Argument(help="One line saying what to do.")],
    description: Annotated[str, typer.Option("--description", "-d", help="What to do, in full." + FROM_FILE)] = "",
    acceptance: Annotated[str, typer.Option("--acceptance", "-a", help="How to tell it is done." + FROM_FILE)] = "",
    type: Annotated[str, typer.Option("--type", "-t", help="task, bug, feature, epic or chore.")] = "task",
    priority: Annotated[int, typer.Option("--priority", "-p", help="0 (highest) to 4 (lowest).")] = 2,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Repeatable.")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="Make it a child of this bead.")] = None,
    blocked_by: Annotated[list[str] | None, typer.Option("--blocked-by", "-b", help="Repeatable.")] = None,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Create a bead and print its id."""
    with open_town(town_dir) as town:
        bead = town.bead_create(
            actor(town, as_),
            title,
            description=text_value(description, "--description") or "",
            acceptance=text_value(acceptance, "--acceptance") or "",
            type=type,
            priority=priority,
            labels=label or (),
            parent=parent,
            blocked_by=blocked_by or (),
        )
    emit(as_json, bead, lambda c: c.print(f"created [bold]{bead.id}[/] {bead.title}"))


@app.command("list")
def list_(
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="Repeatable.")] = None,
    assignee: Annotated[str | None, typer.Option("--assignee")] = None,
    label: Annotated[str | None, typer.Option("--label", "-l")] = None,
    type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    limit: Limit = 50,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """List beads, newest first, filtered by status, assignee, label or type."""
    with open_town(town_dir) as town:
        beads = town.bead_list(
            actor(town, as_),
            status=status or (),
            assignee=assignee,
            label=label,
            type=type,
            limit=limit,
            offset=offset,
        )
    show_beads(as_json, beads)


@app.command("ready")
def ready(limit: Limit = 20, as_: AsAgent = None, town_dir: TownDir = None, as_json: Json = False) -> None:
    """Beads ready to claim: open, unblocked, unclaimed; by priority then age."""
    with open_town(town_dir) as town:
        beads = town.bead_ready(actor(town, as_), limit=limit)
    show_beads(as_json, beads)


@app.command("show")
def show(bead_id: BeadId, as_: AsAgent = None, town_dir: TownDir = None, as_json: Json = False) -> None:
    """Everything about one bead: fields, dependencies, result and comments."""
    with open_town(town_dir) as town:
        bead = town.bead_show(actor(town, as_), bead_id)
    emit(as_json, bead, lambda c: c.print(console.bead_detail(bead)))


@app.command("claim")
def claim(
    bead_id: Annotated[str | None, typer.Argument(help="Bead to claim (default: the top ready bead).")] = None,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Claim a bead (or the top ready one) with a lease."""
    with open_town(town_dir) as town:
        bead = town.bead_claim(actor(town, as_), bead_id)
    emit(as_json, bead, lambda c: c.print(f"claimed [bold]{bead.id}[/] {bead.title} (as {bead.assignee})"))


@app.command("update")
def update(
    bead_id: BeadId,
    status: Annotated[str | None, typer.Option("--status", "-s", help="New status.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why the status changes.")] = "",
    title: Annotated[str | None, typer.Option("--title")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d", help="New description." + FROM_FILE)] = None,
    acceptance: Annotated[str | None, typer.Option("--acceptance", "-a", help="New acceptance." + FROM_FILE)] = None,
    notes: Annotated[str | None, typer.Option("--notes")] = None,
    type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    priority: Annotated[int | None, typer.Option("--priority", "-p")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Replaces all labels; repeatable.")] = None,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Change a bead's fields or status."""
    with open_town(town_dir) as town:
        bead = town.bead_update(
            actor(town, as_),
            bead_id,
            status=status,
            reason=reason,
            title=title,
            description=text_value(description, "--description"),
            acceptance=text_value(acceptance, "--acceptance"),
            notes=notes,
            type=type,
            priority=priority,
            labels=label,
        )
    emit(as_json, bead, lambda c: c.print(f"updated [bold]{bead.id}[/] ({bead.status.value})"))


@app.command("comment")
def comment(
    bead_id: BeadId,
    body: Annotated[str, typer.Argument(help="The comment text.")],
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Add a comment to a bead."""
    with open_town(town_dir) as town:
        comment_id = town.bead_comment(actor(town, as_), bead_id, body)
    emit(as_json, {"bead_id": bead_id, "comment_id": comment_id}, lambda c: c.print(f"commented on {bead_id}"))


@app.command("complete")
def complete(
    bead_id: BeadId,
    summary: Annotated[str, typer.Option("--summary", "-m", help="What was done.")],
    branch: Annotated[str | None, typer.Option("--branch")] = None,
    commit: Annotated[str | None, typer.Option("--commit")] = None,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Mark a bead done with a summary of the work (and its branch and commit)."""
    with open_town(town_dir) as town:
        bead = town.bead_complete(actor(town, as_), bead_id, summary, branch, commit)
    emit(as_json, bead, lambda c: c.print(f"completed [bold]{bead.id}[/] {bead.title}"))


@app.command("release")
def release(
    bead_id: BeadId,
    reason: Annotated[str, typer.Option("--reason")] = "",
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Give a claimed bead back to the ready queue."""
    with open_town(town_dir) as town:
        bead = town.bead_release(actor(town, as_), bead_id, reason)
    emit(as_json, bead, lambda c: c.print(f"released [bold]{bead.id}[/] ({bead.status.value})"))


@app.command("link")
def link(
    bead_id: BeadId,
    other: Annotated[str, typer.Argument(help="The bead it depends on / points at.")],
    kind: Annotated[
        str, typer.Option("--kind", "-k", help="blocks (OTHER blocks BEAD), parent, related or discovered_from.")
    ] = "blocks",
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Add a dependency from BEAD to OTHER."""
    with open_town(town_dir) as town:
        dep = town.bead_link(actor(town, as_), bead_id, other, kind)
    emit(as_json, dep, lambda c: c.print(f"linked {dep.bead_id} → {dep.depends_on} ({dep.kind.value})"))


def show_beads(as_json: bool, beads: list[BeadSummary]) -> None:
    """Bead summaries as JSON, or as the table `plain` draws (what `gastown bead ready` prints either way)."""
    if as_json:
        print_json(beads)
    else:
        plain.write(plain.bead_table([b.model_dump(mode="json") for b in beads], plain.Out.of(sys.stdout)))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bead")
