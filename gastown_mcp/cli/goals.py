"""`gastown goal add|list|show|done` and `gastown directive list|show|issue|done|refuse`.

The operator states goals; the overseer (its model loop in `gastown up`, or the operator) turns them into
directives for the mayor. Escalations reach the operator as mail and as directives of kind `escalate`, closed
with `gastown directive done ID`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, open_town
from gastown_mcp.errors import InvalidInput
from gastown_mcp.town.directives import Directive, DirectiveIn
from gastown_mcp.town.goals import Goal

goal_app = typer.Typer(help="Goals: what the town should achieve; the overseer directs the mayor toward them.")
directive_app = typer.Typer(help="Directives: the overseer's tracked instructions to the mayor.")
goal_app.info.no_args_is_help = directive_app.info.no_args_is_help = True


def _goals_table(goals: list[Goal]) -> Table:
    table = Table("goal", "state", "rig", "convoys", "merged", "spent / budget", "open directives", "text")
    for g in goals:
        merged = sum(c.progress.get("merged", 0) for c in g.convoys)
        total = sum(sum(c.progress.values()) for c in g.convoys)
        convoys = ", ".join(f"{c.id}{' (landed)' if c.landed else ''}" for c in g.convoys)
        opened = ", ".join(f"#{d.id} {d.kind.value}" for d in g.directives)
        budget = f"${g.spent_usd:.4f}" + (f" / ${g.budget_usd:.2f}" if g.budget_usd is not None else "")
        table.add_row(str(g.id), g.state.value, g.rig or "", convoys, f"{merged}/{total}", budget, opened, g.text[:80])
    return table


def _directives_table(found: list[Directive]) -> Table:
    table = Table("directive", "kind", "to", "state", "attempts", "args", "reason", "note")
    for d in found:
        args = ", ".join(f"{k}={v}" for k, v in d.args.items() if k != "text")  # the goal's text: goal show
        table.add_row(
            f"#{d.id}", d.kind.value, d.recipient, d.state.value, str(d.attempts), args, d.reason[:60], d.note[:60]
        )
    return table


@goal_app.command("add")
def goal_add(
    text: Annotated[str, typer.Argument(help="what should be true once the work for it has landed")],
    rig: Annotated[str | None, typer.Option("--rig", help="the rig the work is for")] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="what it may cost, in USD")] = None,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """State a goal; with `[overseer] enabled = true` the running town's overseer directs the mayor to it."""
    with open_town(town_dir) as town:
        goal = town.goal_add(actor(town, as_agent), text, rig, budget_usd)
    emit(as_json, goal, lambda c: c.print(f"goal [bold]{goal.id}[/] added ({goal.state.value})"))


@goal_app.command("list")
def goal_list(
    state: Annotated[str | None, typer.Option("--state", help="active, achieved or abandoned")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Goals, newest first, with their convoys' progress."""
    with open_town(town_dir) as town:
        found = town.goal_list(actor(town, as_agent), state, limit)
    emit(as_json, found, lambda c: c.print(_goals_table(found)))


@goal_app.command("show")
def goal_show(goal_id: int, town_dir: TownDir = None, as_agent: AsAgent = None, as_json: Json = False) -> None:
    """One goal: its convoys and its open directives."""
    with open_town(town_dir) as town:
        goal = town.goal_show(actor(town, as_agent), goal_id)

    def render(c: Console) -> None:
        c.print(_goals_table([goal]))
        c.print(goal.text)
        if goal.reason:
            c.print(f"[dim]{goal.reason}[/]")

    emit(as_json, goal, render)


@goal_app.command("done")
def goal_done(
    goal_id: int,
    abandon: Annotated[bool, typer.Option("--abandon", help="abandoned instead of achieved")] = False,
    reason: Annotated[str, typer.Option("--reason", "-m")] = "",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Close a goal by hand: achieved (or --abandon)."""
    with open_town(town_dir) as town:
        goal = town.goal_update(actor(town, as_agent), goal_id, "abandoned" if abandon else "achieved", reason)
    emit(as_json, goal, lambda c: c.print(f"goal [bold]{goal.id}[/] {goal.state.value}"))


@directive_app.command("list")
def directive_list(
    state: Annotated[str | None, typer.Option("--state", help="issued, acknowledged, done or refused")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Directives, newest first (the mayor sees its own; the operator every one)."""
    with open_town(town_dir) as town:
        found = town.directive_list(actor(town, as_agent), state, limit)
    emit(as_json, found, lambda c: c.print(_directives_table(found)))


@directive_app.command("issue")
def directive_issue(
    kind: Annotated[str, typer.Argument(help="plan_goal, reprioritise, unblock, cancel, set_max_polecats, ...")],
    reason: Annotated[str, typer.Option("--reason", "-m", help="why")],
    args: Annotated[str, typer.Option("--args", help='its arguments as JSON, e.g. {"goal": 3}')] = "{}",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Give the mayor a directive by hand (the operator acting as the overseer)."""
    try:
        given = json.loads(args)
        directive = DirectiveIn.model_validate({**given, "kind": kind, "reason": reason})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"bad directive: {problems}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f'--args must be a JSON object such as {{"goal": 3}}: {exc}') from None
    with open_town(town_dir) as town:
        issued = town.directive_issue(actor(town, as_agent), directive)
    emit(as_json, issued, lambda c: c.print(_directives_table([issued])))


def _close(directive_id: int, state: str, note: str, town_dir: TownDir, as_agent: AsAgent, as_json: bool) -> None:
    with open_town(town_dir) as town:
        done = town.directive_update(actor(town, as_agent), directive_id, state, note)
    emit(as_json, done, lambda c: c.print(f"directive #{done.id} {done.state.value}"))


@directive_app.command("done")
def directive_done(
    directive_id: int,
    note: Annotated[str, typer.Option("--note", "-m")] = "",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Report a directive carried out (or an escalation decided)."""
    _close(directive_id, "done", note, town_dir, as_agent, as_json)


@directive_app.command("refuse")
def directive_refuse(
    directive_id: int,
    note: Annotated[str, typer.Option("--note", "-m", help="why (required)")] = "",
    town_dir: TownDir = None,
    as_agent: AsAgent = None,
    as_json: Json = False,
) -> None:
    """Refuse a directive, saying why."""
    _close(directive_id, "refused", note, town_dir, as_agent, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(goal_app, name="goal")
    app.add_typer(directive_app, name="directive")
