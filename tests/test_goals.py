"""Goals and directives: the operator's goals, the overseer's tracked directives to the mayor (deduplicated,
issued -> acknowledged -> done | refused), a goal achieved when its convoys land, and who may do what."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from gastown_mcp.cli import build_app
from gastown_mcp.config import Settings
from gastown_mcp.errors import Conflict, Forbidden, InvalidInput, InvalidTransition, NotFound
from gastown_mcp.models import Agent, MessageKind, Role
from gastown_mcp.server.client import connect_http, result_text, serve_http
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town import Town
from gastown_mcp.town.directives import DirectiveIn, DirectiveKind
from gastown_mcp.town.goals import GoalState

ONE_ITEM = {
    "title": "Say hello",
    "items": [
        {"key": "hello", "title": "Write HELLO.md", "complexity": 1,
         "acceptance": [{"text": "HELLO.md exists", "verify": "test -f HELLO.md"}]},
    ],
}  # fmt: skip


def plan_goal(goal: int, reason: str = "a new goal has no plan yet") -> DirectiveIn:
    return DirectiveIn(kind=DirectiveKind.plan_goal, goal=goal, reason=reason)


def land(store: Store, convoy_id: str) -> None:
    """What the merge queue does when the convoy's last bead is on main (tests here have no rig to merge)."""
    with store.db.write() as tx:
        tx.execute("UPDATE beads SET status='done' WHERE id=?", (convoy_id,))


def test_a_directive_reaches_the_mayor_as_a_nudge_once_and_is_tracked_to_done(
    town: Town, operator: Agent, add_agent: Callable[..., Agent], store: Store
) -> None:
    mayor = add_agent("mayor", Role.mayor)
    goal = town.goal_add(operator, "Greet people by name")
    issued = town.directive_issue(operator, plan_goal(goal.id))
    assert issued.recipient == "mayor" and issued.state.value == "issued" and issued.key == f"plan_goal:goal={goal.id}"
    # The same directive while it is open: refused, naming the open one.
    with pytest.raises(Conflict, match=f"#{issued.id}"):
        town.directive_issue(operator, plan_goal(goal.id, "asked again"))
    [nudge] = town.take_nudges(mayor)
    assert nudge.kind is MessageKind.nudge and f"DIRECTIVE #{issued.id} (plan_goal)" in nudge.body
    assert "plan_create" in nudge.body and "Greet people by name" in nudge.body
    assert town.take_nudges(mayor) == []
    assert [d.id for d in town.directive_list(mayor)] == [issued.id]
    assert town.goal_show(operator, goal.id).directives[0].id == issued.id

    town.directive_update(mayor, issued.id, "acknowledged")
    convoy = town.plan_apply(mayor, ONE_ITEM, goal=goal.text)
    done = town.directive_update(mayor, issued.id, "done", "planned", convoy=convoy.id)
    assert done.state.value == "done" and done.note == "planned"
    with pytest.raises(InvalidTransition, match="is done"):
        town.directive_update(mayor, issued.id, "refused", "too late")
    shown = town.goal_show(operator, goal.id)
    assert [c.id for c in shown.convoys] == [convoy.id] and shown.directives == []
    # Closed, the same directive can be given again.
    again = town.directive_issue(operator, plan_goal(goal.id, "the first plan was not enough"))
    assert again.id != issued.id
    verbs = [e.verb for e in town.events(operator, limit=1000) if e.verb.startswith(("directive.", "goal."))]
    assert verbs == [
        "goal.added",
        "directive.issued",
        "directive.acknowledged",
        "goal.linked",
        "directive.done",
        "directive.issued",
    ]


def test_a_goal_is_achieved_only_when_every_one_of_its_convoys_has_landed(
    town: Town, operator: Agent, add_agent: Callable[..., Agent], store: Store
) -> None:
    mayor = add_agent("mayor", Role.mayor)
    goal = town.goal_add(operator, "Two plans")
    first, second = (town.plan_apply(mayor, {**ONE_ITEM, "title": t}) for t in ("one", "two"))
    town.goal_link(mayor, goal.id, first.id)
    town.goal_link(mayor, goal.id, second.id)
    land(store, first.id)
    assert town.goals_landed(operator, first.id) == []
    land(store, second.id)
    [achieved] = town.goals_landed(operator, second.id)
    assert achieved.state is GoalState.achieved and second.id in achieved.reason
    assert town.goals_landed(operator, second.id) == []  # once
    with pytest.raises(NotFound, match="not a convoy"):
        town.goal_link(mayor, goal.id, town.plan_apply(mayor, ONE_ITEM).beads[0].id)


def test_bad_goals_and_directives_are_refused_with_what_to_do(town: Town, operator: Agent) -> None:
    with pytest.raises(InvalidInput, match="needs text"):
        town.goal_add(operator, "   ")
    with pytest.raises(NotFound):
        town.goal_add(operator, "x", rig="nowhere")
    goal = town.goal_add(operator, "x")
    with pytest.raises(InvalidInput, match="needs bead"):
        town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.unblock, reason="r"))
    with pytest.raises(NotFound):
        town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.cancel, bead="gt-nope", reason="r"))
    town.goal_update(operator, goal.id, "abandoned", "changed my mind")
    with pytest.raises(InvalidInput, match="abandoned"):
        town.directive_issue(operator, plan_goal(goal.id))
    # Without a mayor agent the operator keeps the mayor: the directive comes as mail.
    other = town.goal_add(operator, "y")
    issued = town.directive_issue(operator, plan_goal(other.id))
    assert issued.recipient == "operator"
    assert any(m.subject == f"directive #{issued.id}: plan_goal" for m in town.inbox(operator))
    with pytest.raises(InvalidInput, match="say why"):
        town.directive_update(operator, issued.id, "refused")


def test_polecats_and_mayors_cannot_add_goals_or_issue_directives(
    town: Town, operator: Agent, add_agent: Callable[..., Agent]
) -> None:
    goal = town.goal_add(operator, "x")
    for role in (Role.polecat, Role.mayor, Role.refinery, Role.witness):
        agent = add_agent(f"{role.value}-1", role)
        with pytest.raises(Forbidden, match="may not add goals"):
            town.goal_add(agent, "mine")
        with pytest.raises(Forbidden, match="may not issue directives"):
            town.directive_issue(agent, plan_goal(goal.id))
    polecat = town.agent("polecat-1")
    with pytest.raises(Forbidden):
        town.directive_list(polecat)


async def test_through_the_mcp_client_a_polecat_or_mayor_token_is_refused_goals_and_directives(
    town: Town, operator: Agent, add_agent: Callable[..., Agent], credentials: dict[str, Credentials]
) -> None:
    for name, role in (("mayor", Role.mayor), ("nux", Role.polecat), ("boss", Role.overseer)):
        add_agent(name, role)
    goal = town.goal_add(operator, "Greet people")
    with serve_http(town) as url:
        for name in ("nux", "mayor"):
            async with connect_http(url, credentials[name].token) as c:
                with anyio.fail_after(10):
                    listed = {t.name for t in (await c.list_tools()).tools}
                    added = await c.call_tool("goal_add", {"text": "sneaky"})
                    issued = await c.call_tool("directive_issue", {"kind": "plan_goal", "goal": 1, "reason": "r"})
                assert {"goal_add", "directive_issue"}.isdisjoint(listed)
                assert (
                    added.is_error
                    and f"{name} (" in result_text(added)
                    and "may not call goal_add" in result_text(added)
                )
                assert issued.is_error and "may not call directive_issue" in result_text(issued)
        async with connect_http(url, credentials["boss"].token) as boss:
            with anyio.fail_after(10):
                made = await boss.call_tool("directive_issue", {"kind": "plan_goal", "goal": goal.id, "reason": "go"})
        assert not made.is_error, result_text(made)
        async with connect_http(url, credentials["mayor"].token) as mayor:
            with anyio.fail_after(10):
                mine = await mayor.call_tool("directive_list", {})
                ack = await mayor.call_tool("directive_update", {"id": 1, "state": "acknowledged"})
        # The directive rode in as a nudge on the mayor's next tool result, once.
        assert "NUDGE from boss (#" in result_text(mine) and "DIRECTIVE #1 (plan_goal)" in result_text(mine)
        assert "NUDGE" not in result_text(ack)
        assert [d["kind"] for d in (mine.structured_content or {})["directives"]] == ["plan_goal"]
        assert (ack.structured_content or {})["state"] == "acknowledged"
    assert [g.text for g in town.goal_list(operator)] == ["Greet people"]


def test_a_rig_directive_done_changes_what_the_scheduler_reads(
    town: Town, operator: Agent, add_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "i",
        ],
        check=True,
    )
    town.rig_add(operator, "web", str(repo))
    mayor = add_agent("mayor", Role.mayor)
    pause = town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.pause_rig, rig="web", reason="spend"))
    assert town.rig_control("web") == {}
    town.directive_update(mayor, pause.id, "done")
    assert town.rig_control("web")["paused"] is True
    limit = DirectiveIn(kind=DirectiveKind.set_max_polecats, rig="web", max_polecats=2, reason="fewer at once")
    town.directive_update(mayor, town.directive_issue(operator, limit).id, "done")
    control = town.rig_control("web")
    assert control["paused"] is True and control["max_polecats"] == 2


def test_the_cli_adds_lists_shows_and_closes_goals(tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    town_dir = tmp_path / "t"
    assert runner.invoke(app, ["init", str(town_dir), "--name", "t"]).exit_code == 0
    added = runner.invoke(app, ["goal", "add", "Greet people", "--town", str(town_dir), "--json"])
    assert added.exit_code == 0, added.output
    goal = json.loads(added.output)
    assert goal["state"] == "active"
    listed = runner.invoke(app, ["goal", "list", "--town", str(town_dir)], env={"COLUMNS": "200"})
    assert "Greet people" in listed.output and "$0.0000" in listed.output
    bad = runner.invoke(app, ["goal", "add", "x", "--rig", "nope", "--town", str(town_dir)])
    assert bad.exit_code != 0 and "error:" in bad.output
    closed = runner.invoke(app, ["goal", "done", str(goal["id"]), "--abandon", "--town", str(town_dir), "--json"])
    assert json.loads(closed.output)["state"] == "abandoned"
    shown = runner.invoke(app, ["goal", "show", str(goal["id"]), "--town", str(town_dir)])
    assert "abandoned" in shown.output
    refused = runner.invoke(app, ["goal", "add", "mine", "--town", str(town_dir), "--as", "nobody"])
    assert refused.exit_code != 0
    by_role = runner.invoke(app, ["usage", "--by-role", "--town", str(town_dir)])
    assert by_role.exit_code == 0 and "model usage by role" in by_role.output


def test_usage_by_role_sums_agents_and_gives_shares(town: Town, operator: Agent) -> None:
    from gastown_mcp.town.budgets import AgentUsage
    from gastown_mcp.town.goals import usage_by_role

    def row(agent: str, tokens: int) -> AgentUsage:
        return AgentUsage(
            agent=agent, rig=None, requests=1, refused=0, input_tokens=tokens, output_tokens=0,
            cache_creation_tokens=0, cache_read_tokens=0, cost_usd=0.01, tokens_remaining=None, usd_remaining=None,
        )  # fmt: skip

    roles = {"nux": "polecat", "slit": "polecat", "overseer": "overseer"}
    found = usage_by_role([row("nux", 600), row("slit", 300), row("overseer", 100)], roles)
    assert [(r.role, r.agents, r.tokens, r.share) for r in found] == [
        ("polecat", 2, 900, 0.9),
        ("overseer", 1, 100, 0.1),
    ]
    assert town.usage_by_role(operator) == []


def test_the_scheduler_holds_a_paused_rig_and_keeps_to_a_directed_polecat_limit(
    store: Store, settings: Settings, operator: Agent, add_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    import subprocess

    from fakes import FakeRuntime

    from gastown_mcp.config import RigSection, SchedulerSection
    from gastown_mcp.supervisor.reconciler import Reconciler
    from gastown_mcp.town import Fleet, FleetConfig

    source = tmp_path / "source"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(source)]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "initial"], check=True)
    auto = settings.model_copy(update={"scheduler": SchedulerSection(auto=True), "rigs": {"web": RigSection()}})
    fleet = Fleet(store, FakeRuntime(), FleetConfig(town="t", town_dir=settings.town_dir, mcp_url="x"))
    town = Town(store, auto, fleet)
    town.rig_add(operator, "web", str(source))
    mayor = add_agent("mayor", Role.mayor)
    for n in range(4):
        town.bead_create(operator, f"bead {n}")
    pause = town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.pause_rig, rig="web", reason="spend"))
    town.directive_update(mayor, pause.id, "done")
    reconciler = Reconciler(town)
    assert [s for s in reconciler.tick() if s.verb == "dispatched"] == []
    limit = DirectiveIn(kind=DirectiveKind.set_max_polecats, rig="web", max_polecats=2, reason="fewer at once")
    town.directive_update(mayor, town.directive_issue(operator, limit).id, "done")
    resume = town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.resume_rig, rig="web", reason="go on"))
    town.directive_update(mayor, resume.id, "done")
    assert len([s for s in reconciler.tick() if s.verb == "dispatched"]) == 2
    assert [s for s in reconciler.tick() if s.verb == "dispatched"] == []


def test_a_plan_goal_message_names_plan_creates_exact_arguments_whatever_the_goal_text(
    town: Town, operator: Agent, add_agent: Callable[..., Agent]
) -> None:
    from gastown_mcp.standin.conversation import Conversation, ToolCall
    from gastown_mcp.standin.overseer import MayorScript

    add_agent("mayor", Role.mayor)
    text = 'Say "héllo", then {braces}, {id} and a newline:\nsecond line'
    goal = town.goal_add(operator, text)
    issued = town.directive_issue(operator, DirectiveIn(kind=DirectiveKind.plan_goal, goal=goal.id, reason="no plan"))
    [nudge] = town.nudges(operator, to="mayor")
    # A mayor resumed with it (the scripted one here) carries it out in one call, from the message alone.
    prompt = {"role": "user", "content": [{"type": "text", "text": nudge.nudge_line()}]}
    turn = MayorScript().next_turn(Conversation({"messages": [prompt]}))
    calls = [(b.name, b.input) for b in turn.blocks if isinstance(b, ToolCall)]
    assert calls == [("mcp__gastown__plan_create", {"goal": text, "directive": issued.id})]
