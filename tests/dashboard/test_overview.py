"""The operator's overview in the town API on a real SQLite file: spend attributed to the bead an agent held
(and its convoy, role, rig), needs-you, the board's columns, the operator's token, and `gastown usage --by`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gastown_mcp.cli import build_app
from gastown_mcp.config import load_settings
from gastown_mcp.errors import Forbidden, InvalidInput, Unauthorized
from gastown_mcp.models import Agent, Role
from gastown_mcp.store import Store
from gastown_mcp.town import Town, operator
from gastown_mcp.town.budgets import Estimate, Usage
from gastown_mcp.town.directives import DirectiveIn, DirectiveKind


def spend(town: Town, agent: Agent, tokens: int) -> None:
    """One metered model request by `agent`, as the gateway records it."""
    res = town.budgets.reserve(agent.name, agent.rig, "scripted-standin", Estimate(tokens=tokens, usd=1.0))
    town.budgets.settle(res, Usage(input_tokens=tokens, output_tokens=tokens // 2), duration_ms=120.0)


def plan(town: Town) -> tuple[str, list[str]]:
    criteria = [{"text": "it works", "verify": "true"}]
    items = [{"key": k, "title": f"step {k}", "complexity": 1, "acceptance": criteria} for k in ("a", "b")]
    convoy = town.plan_apply(operator(), {"title": "the goal", "items": items}, goal="ship it")
    return convoy.id, [b.id for b in convoy.beads]


def test_spend_goes_to_the_bead_its_agent_held_and_on_to_its_convoy_role_and_rig(town: Town) -> None:
    op = operator()
    convoy, (first, second) = plan(town)
    loose = town.bead_create(op, "not in a convoy")
    nux = town.agent_add(op, "nux", "polecat", "web").agent
    ace = town.agent_add(op, "ace", "polecat", "api").agent
    mayor = town.agent_add(op, "mayor", "mayor").agent
    spend(town, mayor, 50)  # before any claim: no bead
    town.bead_claim(nux, first)
    spend(town, nux, 100)
    spend(town, nux, 100)
    town.bead_complete(nux, first, "done")
    town.bead_claim(nux, second)  # the same agent name moves on: later spend is the next bead's
    spend(town, nux, 10)
    town.bead_claim(ace, loose.id)
    spend(town, ace, 1000)

    by_bead = {u.key: u for u in town.usage_by(op, "bead")}
    assert by_bead[first].requests == 2 and by_bead[first].tokens == 300
    assert by_bead[second].tokens == 15 and by_bead[loose.id].tokens == 1500 and by_bead[""].tokens == 75
    by_convoy = {u.key: u.tokens for u in town.usage_by(op, "convoy")}
    assert by_convoy == {convoy: 315, "": 1575}
    assert {u.key: u.tokens for u in town.usage_by(op, "role")} == {"polecat": 1815, "mayor": 75}
    assert {u.key: u.tokens for u in town.usage_by(op, "rig")} == {"web": 315, "api": 1500, "": 75}
    assert town.usage_by(op, "bead")[0].key == loose.id  # dearest first
    story = town.bead_story(op, first)
    assert story.usage.requests == 2 and story.usage.tokens == 300 and story.convoy == convoy
    points = town.spend_series(op)
    assert points and points[-1].cumulative_usd == pytest.approx(sum(u.cost_usd for u in town.usage(op)))
    with pytest.raises(InvalidInput, match="bead, convoy, role, rig"):
        town.usage_by(op, "colour")


def test_needs_you_lists_stops_escalations_blocked_beads_and_budgets(town: Town) -> None:
    op = operator()
    assert town.needs_you(op) == []
    bead = town.bead_create(op, "stuck")
    town.block(op, bead.id, "needs the staging password")
    witness = town.agent_add(op, "witness", Role.witness.value).agent
    town.escalate(witness, "polecat nux is stalled", "it made no call for 10 minutes")
    town.budget_set(op, "town", tokens=100)
    spend(town, town.agent_add(op, "nux", "polecat").agent, 90)
    town.estop(op, "drill")
    kinds = {i.kind: i for i in town.needs_you(op)}
    assert set(kinds) == {"estop", "escalation", "blocked", "budget"}
    assert kinds["blocked"].detail == "needs the staging password" and kinds["blocked"].bead_id == bead.id
    assert kinds["escalation"].to_operator and "stalled" in kinds["escalation"].title
    assert "spent" in kinds["budget"].title
    assert town.directives_waiting(op) == []
    asked = town.directive_issue(
        op,
        DirectiveIn(
            kind=DirectiveKind.escalate,
            about=f"bead:{bead.id}",
            question="Its gates keep failing: split it or drop it?",
            reason="failed 3 times",
        ),
    )
    [waiting] = [i for i in town.needs_you(op) if i.kind == "directive"]
    assert waiting.title == f"directive #{asked.id}: escalate (issued)" and waiting.to_operator
    assert "split it or drop it?" in waiting.detail and f"gastown directive done {asked.id}" in waiting.detail


def test_only_the_operator_reads_needs_you_and_issues_the_dashboard_token(town: Town) -> None:
    mayor = town.agent_add(operator(), "mayor", "mayor").agent
    with pytest.raises(Forbidden):
        town.needs_you(mayor)
    with pytest.raises(Forbidden):
        town.operator_token(mayor)
    with pytest.raises(Unauthorized):
        town.operator_login("gto_guess")
    token = town.operator_token(operator())
    assert town.operator_login(token).name == "operator"


def test_the_board_puts_each_bead_in_one_column(town: Town) -> None:
    op = operator()
    polecat = town.agent_add(op, "mayor", "mayor").agent  # claims any number of beads
    ready = town.bead_create(op, "ready")
    waiting = town.bead_create(op, "waiting", blocked_by=[ready.id])
    working = town.bead_create(op, "working")
    town.bead_claim(polecat, working.id)
    done = town.bead_create(op, "done")
    town.bead_claim(polecat, done.id)
    town.bead_complete(polecat, done.id, "ok")
    blocked = town.bead_create(op, "blocked")
    town.block(op, blocked.id, "why")
    board = town.board(op)
    where = {c.name: [card.id for card in c.cards] for c in board.columns}
    assert where == {
        "ready": [ready.id],
        "waiting": [waiting.id],
        "in_progress": [working.id],
        "awaiting_merge": [],
        "merged": [done.id],
        "blocked": [blocked.id],
    }
    assert sum(board.counts.values()) == 5


def test_usage_by_on_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    town_dir = tmp_path / "town"
    assert runner.invoke(build_app(), ["init", str(town_dir)]).exit_code == 0
    settings = load_settings(town_dir)
    store = Store(settings)
    try:
        town = Town(store, settings)
        nux = town.agent_add(operator(), "nux", "polecat", "web").agent
        bead = town.bead_create(operator(), "paid work")
        town.bead_claim(nux, bead.id)
        spend(town, nux, 40)
    finally:
        store.close()
    out = runner.invoke(build_app(), ["usage", "--by", "bead", "--json", "--town", str(town_dir)])
    assert out.exit_code == 0, out.output
    assert [(u["key"], u["tokens"]) for u in json.loads(out.stdout)] == [(bead.id, 60)]
    table = runner.invoke(build_app(), ["usage", "--by", "rig", "--town", str(town_dir)])
    assert table.exit_code == 0 and "web" in table.stdout
    bad = runner.invoke(build_app(), ["usage", "--by", "colour", "--town", str(town_dir)])
    assert bad.exit_code != 0 and "bead, convoy, role, rig" in bad.stderr
    token = runner.invoke(build_app(), ["dashboard", "token", "--json", "--town", str(town_dir)])
    assert token.exit_code == 0 and json.loads(token.stdout)["token"].startswith("gto_")
