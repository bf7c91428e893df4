"""Plans end to end without a key: Town.plan_create -> the real anthropic client -> the town's gateway -> the
scripted stand-in's `submit_plan`; checked, repaired once, created in one transaction or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from planning import planning_town

from gastown_mcp.config import Settings
from gastown_mcp.errors import BudgetExceeded, InvalidInput
from gastown_mcp.models import Agent, BeadStatus, BeadType, DepKind, Role
from gastown_mcp.standin.conversation import Conversation, Turn
from gastown_mcp.standin.planner import Models, six_bead_plan
from gastown_mcp.store import Store
from gastown_mcp.town import Town
from gastown_mcp.town.plans import check_plan


@pytest.fixture
def ptown(store: Store, settings: Settings) -> Iterator[tuple[Town, Any]]:
    with planning_town(store, settings) as (town, standin):
        yield town, standin


def _counts(store: Store) -> tuple[int, int, int]:
    one = store.db.query_one
    return (
        one("SELECT count(*) AS n FROM beads")["n"],
        one("SELECT count(*) AS n FROM deps")["n"],
        one("SELECT count(*) AS n FROM events WHERE verb LIKE 'bead.%' OR verb LIKE 'plan.%'")["n"],
    )


def test_a_goal_becomes_a_six_bead_plan_created_at_once_and_only_its_roots_are_ready(
    ptown: tuple[Town, Any], operator: Agent, store: Store
) -> None:
    town, standin = ptown
    result = town.plan_create(operator, "Add a notes command line")
    assert result.rounds == 1 and result.input_tokens > 0 and result.output_tokens > 0
    convoy = result.convoy
    assert convoy is not None and len(convoy.beads) == 6
    assert convoy.progress == {"open": 6, "in_progress": 0, "awaiting_merge": 0, "merged": 0, "cancelled": 0}
    by_key = {b.key: b.id for b in convoy.beads}
    assert {b.id for b in town.bead_ready(operator)} == {by_key["scaffold"], by_key["fixtures"]}
    epic = town.bead_show(operator, convoy.id)
    assert epic.type is BeadType.epic and epic.status is BeadStatus.open
    assert sorted(epic.blocked_by) == sorted(by_key.values())  # the convoy waits on all of its beads
    cli = town.bead_show(operator, by_key["cli"])
    assert sorted(cli.blocked_by) == sorted([by_key["api"], by_key["fixtures"]])
    assert any(d.kind is DepKind.parent and d.depends_on == convoy.id for d in cli.deps)
    assert cli.metadata["verify"] == [{"text": "src/pkg/cli.py exists", "verify": "test -f src/pkg/cli.py"}]
    assert "verify: `test -f src/pkg/cli.py`" in cli.acceptance and cli.metadata["complexity"] == 3
    # The request went through the gateway, forced onto the tool, and was metered under the refinery's key.
    [request] = standin.requests
    assert request.body["tool_choice"] == {"type": "tool", "name": "submit_plan"}
    usage = store.db.query("SELECT agent FROM usage")
    assert [r["agent"] for r in usage] == ["refinery"]
    assert town.agent("refinery").role is Role.refinery
    assert [c.id for c in town.convoy_list(operator)] == [convoy.id]


@pytest.mark.parametrize(
    ("tag", "problem"),
    [
        ("[cycle]", "dependency cycle: scaffold -> docs -> cli -> api -> model -> scaffold"),
        ("[missing-criterion]", "item 'api': no acceptance criterion"),
        ("[unknown-dep]", "item 'cli' depends on 'database', which is not an item of this plan"),
        ("[huge]", "the plan has 66 items; at most 25"),
    ],
)
def test_a_malformed_plan_is_refused_after_one_repair_round_with_its_problems_named_and_nothing_created(
    ptown: tuple[Town, Any], operator: Agent, store: Store, tag: str, problem: str
) -> None:
    town, standin = ptown
    before = _counts(store)
    with pytest.raises(InvalidInput, match="after a repair round") as refused:
        town.plan_create(operator, f"{tag} Add a notes command line")
    assert problem in str(refused.value)
    assert _counts(store) == before
    _, repair = standin.requests
    [result] = [b for b in repair.body["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert result["is_error"] is True and problem in result["content"]


def test_the_repair_round_fixes_a_plan_whose_first_answer_had_one_error(
    ptown: tuple[Town, Any], operator: Agent
) -> None:
    town, standin = ptown
    result = town.plan_create(operator, "[repair] Add a notes command line")
    assert result.rounds == 2 and result.convoy is not None and len(result.convoy.beads) == 6
    assert len(standin.requests) == 2


def test_a_dry_run_returns_the_plan_and_creates_nothing(ptown: tuple[Town, Any], operator: Agent, store: Store) -> None:
    town, _ = ptown
    before = _counts(store)
    result = town.plan_create(operator, "Add a notes command line", dry_run=True)
    assert result.convoy is None and [i.key for i in result.plan.items][:2] == ["scaffold", "fixtures"]
    assert _counts(store) == before
    applied = town.plan_apply(operator, result.plan.model_dump(), goal="Add a notes command line")
    assert len(applied.beads) == 6


class SpendsTheBudgetAfterOneAnswer(Models):
    """The operator cuts the refinery's budget to nothing while its first (bad) answer is being checked."""

    town: Any = None

    def next_turn(self, conversation: Conversation) -> Turn:
        turn = super().next_turn(conversation)
        from gastown_mcp.town import operator

        self.town.budget_set(operator(), "agent", "refinery", tokens=1)
        return turn


def test_a_planner_budget_spent_mid_plan_is_a_clear_error_and_nothing_is_half_created(
    store: Store, settings: Settings, operator: Agent
) -> None:
    script = SpendsTheBudgetAfterOneAnswer()
    with planning_town(store, settings, script) as (town, standin):
        script.town = town
        before = _counts(store)
        with pytest.raises(BudgetExceeded, match="refinery planner's budget is spent"):
            town.plan_create(operator, "[repair] Add a notes command line")
        assert _counts(store) == before and len(standin.requests) == 1


def test_plans_are_refused_for_roles_without_plan_create(ptown: tuple[Town, Any], add_agent: Any) -> None:
    town, _ = ptown
    from gastown_mcp.errors import Forbidden

    with pytest.raises(Forbidden):
        town.plan_create(add_agent("nux", Role.polecat), "anything")
    assert town.plan_create(add_agent("boss", Role.mayor), "Add a notes command line").convoy is not None


def test_check_plan_names_every_problem_at_once() -> None:
    plan = six_bead_plan("x")
    plan["items"][1]["title"] = plan["items"][0]["title"]
    plan["items"][2]["complexity"] = 11
    _, problems = check_plan(plan, 25, 8)
    assert problems == ["items[2].complexity: Input should be less than or equal to 10"]
    plan["items"][2]["complexity"] = 3
    plan["items"][5]["depends_on"] = ["docs"]
    _, problems = check_plan(plan, 25, 8)
    assert any("used twice" in p for p in problems) and any("depends on itself" in p for p in problems)


async def test_the_mayor_plans_and_reads_the_convoy_through_the_mcp_tools_and_a_polecat_cannot(
    ptown: tuple[Town, Any], add_agent: Any
) -> None:
    from mcp import Client

    from gastown_mcp.server import build_server
    from gastown_mcp.server.client import result_text

    town, _ = ptown
    mayor, polecat = add_agent("mayor", "mayor"), add_agent("polecat-1", "polecat")
    async with Client(build_server(town, mayor)) as client:  # type: ignore[arg-type]
        result = await client.call_tool("plan_create", {"goal": "Add a notes command line"})
        assert not result.is_error, result_text(result)
        assert result.structured_content is not None
        convoy_id = result.structured_content["convoy"]["id"]
        shown = await client.call_tool("convoy_show", {"id": convoy_id})
        assert not shown.is_error and shown.structured_content is not None
        assert len(shown.structured_content["beads"]) == 6
    async with Client(build_server(town, polecat)) as client:  # type: ignore[arg-type]
        assert "plan_create" not in {t.name for t in (await client.list_tools()).tools}
        refused = await client.call_tool("plan_create", {"goal": "anything"})
        assert refused.is_error and "may not call plan_create" in result_text(refused)


async def test_one_plan_create_call_carries_out_a_plan_goal_directive_and_refuses_what_it_cannot(
    ptown: tuple[Town, Any], add_agent: Any, operator: Agent
) -> None:
    from mcp import Client

    from gastown_mcp.server import build_server
    from gastown_mcp.server.client import result_text
    from gastown_mcp.town.directives import DirectiveIn, DirectiveKind

    town, _ = ptown
    mayor = add_agent("mayor", "mayor")
    goal = town.goal_add(operator, "Add a notes command line")
    planned = town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.plan_goal, goal=goal.id, reason="r"))
    bead = town.bead_create(operator, "stuck")
    unblock = town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.unblock, bead=bead.id, reason="r"))
    async with Client(build_server(town, mayor)) as client:  # type: ignore[arg-type]
        args = {"goal": goal.text, "directive": planned.id}
        dry = await client.call_tool("plan_create", {**args, "dry_run": True})
        assert dry.is_error and "a dry run creates nothing" in result_text(dry)
        assert town.directive_show(operator, planned.id).state.value == "issued"  # a refused call changes nothing
        wrong = await client.call_tool("plan_create", {"goal": "x", "directive": unblock.id})
        assert wrong.is_error and "plan_goal directives only" in result_text(wrong)

        result = await client.call_tool("plan_create", args)
        assert not result.is_error, result_text(result)
        assert result.structured_content is not None and result.structured_content["directive"] == planned.id
        convoy = result.structured_content["convoy"]["id"]
        again = await client.call_tool("plan_create", args)  # nothing is planned twice for one directive
        assert again.is_error and "already done" in result_text(again)
    shown = town.directive_show(operator, planned.id)
    assert shown.state.value == "done" and convoy in shown.note
    assert [c.id for c in town.goal_show(operator, goal.id).convoys] == [convoy]
    verbs = [e.verb for e in town.events(operator, limit=100) if (e.after or {}).get("directive") == planned.id]
    assert sorted(verbs) == ["directive.acknowledged", "directive.done", "directive.issued"]
    assert len(town.convoy_list(operator)) == 1
