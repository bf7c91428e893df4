"""The overseer loop, stepped by tick(): the real `anthropic` client -> the town's gateway -> the scripted
stand-in, with usage rows counted in the town's own store. It wakes only on what matters, costs nothing idle,
escalates a failure that keeps coming back once, and stops directing (telling the operator once) when its
budget is spent."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gastown_mcp.config import GatewayConfig, OverseerSection, Settings, Upstream
from gastown_mcp.gateway import build_gateway
from gastown_mcp.models import Agent, BeadStatus, Role, Verb
from gastown_mcp.planners import build_models
from gastown_mcp.planners.overseer import build_overseer
from gastown_mcp.serving import serve_in_thread
from gastown_mcp.standin import Standin, build_standin
from gastown_mcp.standin.conversation import Conversation, ToolCall, Turn
from gastown_mcp.standin.overseer import OVERSEER_TOOL, loop_models
from gastown_mcp.store import Store
from gastown_mcp.supervisor.overseer import Overseer
from gastown_mcp.town import Town

SENTINEL = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"


@contextlib.contextmanager
def overseen(
    store: Store, settings: Settings, script: Any = None, **overseer: Any
) -> Iterator[tuple[Town, Overseer, Standin]]:
    standin = build_standin(script or loop_models(), expected_key=SENTINEL)
    with serve_in_thread(standin.app) as upstream:
        cfg = GatewayConfig(upstreams={"standin": Upstream(base_url=upstream)}, default_upstream="standin")
        section = OverseerSection(enabled=True, **overseer)
        town = Town(store, settings.model_copy(update={"gateway": cfg, "overseer": section}))
        with serve_in_thread(build_gateway(town, {"ANTHROPIC_API_KEY": SENTINEL})) as gateway:
            town.use_models(build_models(gateway))
            yield town, Overseer(town, build_overseer(town, gateway)), standin


def overseer_requests(store: Store) -> int:
    return int(store.db.query_one("SELECT count(*) AS n FROM usage WHERE agent='overseer'")["n"])


def mail_to_operator(town: Town, operator: Agent) -> list[str]:
    return [m.subject for m in town.inbox(operator, unread_only=False, limit=100)]


@pytest.fixture
def mayor(add_agent: Callable[..., Agent]) -> Agent:
    return add_agent("mayor", Role.mayor)


def test_a_goal_wakes_it_once_and_ten_ticks_without_change_cost_no_model_request(
    store: Store, settings: Settings, operator: Agent, mayor: Agent
) -> None:
    with overseen(store, settings) as (town, overseer, standin):
        assert overseer.tick() == [] and overseer_requests(store) == 0  # nothing to do: nothing asked
        goal = town.goal_add(operator, "Greet people by name")
        steps = overseer.tick()
        assert [s.verb for s in steps] == ["issued", "decided"]
        assert overseer_requests(store) == 1
        [directive] = town.directive_list(mayor)
        assert directive.kind.value == "plan_goal" and directive.goal == goal.id and directive.args["text"] == goal.text
        town.bead_create(operator, "unrelated work")  # not something the overseer needs to judge
        for _ in range(10):
            assert overseer.tick() == []
        assert overseer_requests(store) == 1
        assert overseer.tally.model_requests == 1 and overseer.tally.ticks == 12
        [decided] = [e for e in town.events(operator, limit=1000) if e.verb == Verb.overseer_decided]
        assert decided.after is not None and decided.after["triggers"] == [f"goal {goal.id} was added: {goal.text}"]
        assert decided.after["issued"][0]["key"] == f"plan_goal:goal={goal.id}"
        # The request was forced onto its tool and carried the compact summary, not raw tables.
        [request] = [r for r in standin.requests if "issue_directives" in str(r.body.get("tools"))]
        assert request.body["tool_choice"] == {"type": "tool", "name": "issue_directives"}
        assert '"goals":[{"id":1' in request.body["messages"][0]["content"]


def test_the_goal_is_achieved_when_its_convoy_lands_without_a_model_request(
    store: Store, settings: Settings, operator: Agent, mayor: Agent
) -> None:
    with overseen(store, settings) as (town, overseer, _):
        goal = town.goal_add(operator, "Document the sample project")
        overseer.tick()
        [directive] = town.directive_list(mayor)
        town.directive_update(mayor, directive.id, "acknowledged")
        plan = town.plan_create(mayor, str(directive.args["text"]))
        assert plan.convoy is not None
        town.directive_update(mayor, directive.id, "done", convoy=plan.convoy.id)
        assert overseer.tick() == []  # its directive done: nothing new to judge
        with store.db.write() as tx:  # what the merge queue does when the convoy's last bead lands
            tx.execute("UPDATE beads SET status='done' WHERE id=?", (plan.convoy.id,))
            tx.event("refinery", Verb.convoy_landed, bead_id=plan.convoy.id, after={"beads": 4})
        before = overseer_requests(store)
        steps = overseer.tick()
        assert [(s.verb, s.target) for s in steps] == [("achieved", f"goal {goal.id}")]
        assert overseer_requests(store) == before
        assert town.goal_show(operator, goal.id).state.value == "achieved"


def test_a_failure_that_keeps_coming_back_is_escalated_to_the_human_once_and_then_left_alone(
    store: Store, settings: Settings, operator: Agent, mayor: Agent
) -> None:
    with overseen(store, settings, failure_threshold=1, max_attempts=2, backoff_seconds=0) as (town, overseer, _):
        bead = town.bead_create(operator, "A bead whose gates keep failing")
        escalations = []
        for _ in range(6):
            town.block(operator, bead.id, "gates red: test_greet failed")  # the merge queue handing it back
            for step in overseer.tick():
                if step.verb == "escalated":
                    escalations.append(step)
            for d in town.directive_list(mayor, "issued"):  # the mayor does what it is told
                town.directive_update(mayor, d.id, "acknowledged")
                town.bead_update(mayor, d.args["bead"], status="open", reason=f"directive #{d.id}")
                town.directive_update(mayor, d.id, "done")
            if town.bead_show(operator, bead.id).status is BeadStatus.blocked:
                town.bead_update(operator, bead.id, status="open", reason="the human retries")
        unblocks = [d for d in town.directive_list(operator, limit=100) if d.kind.value == "unblock"]
        assert [d.attempts for d in sorted(unblocks, key=lambda d: d.id)] == [1, 2]
        assert len(escalations) == 1 and escalations[0].target == f"bead:{bead.id}"
        [escalation] = [d for d in town.directive_list(operator, limit=100) if d.kind.value == "escalate"]
        assert escalation.recipient == "operator" and bead.id in (escalation.args.get("question") or "")
        assert mail_to_operator(town, operator).count(f"directive #{escalation.id}: escalate") == 1
        # Three wake-ups (two unblocks, then the escalation); the three failures after it woke nothing.
        assert overseer_requests(store) == 3
        assert len([e for e in town.events(operator, limit=5000) if e.verb == Verb.overseer_escalated]) == 1


def test_with_its_budget_spent_it_stops_directing_tells_the_operator_once_and_the_town_keeps_working(
    store: Store, settings: Settings, operator: Agent, mayor: Agent
) -> None:
    with overseen(store, settings, budget_usd=0.000001) as (town, overseer, _):
        town.goal_add(operator, "First goal")
        overseer.tick()  # admitted (nothing spent yet), and its cost spends the budget
        assert overseer_requests(store) == 1
        assert town.budget(operator, "agent", "overseer")[0].exhausted
        town.goal_add(operator, "Second goal")
        steps = overseer.tick()
        assert [s.verb for s in steps] == ["stopped"]
        for text in ("Third goal", "Fourth goal"):
            town.goal_add(operator, text)
            assert overseer.tick() == []
        assert overseer_requests(store) == 1
        told = [s for s in mail_to_operator(town, operator) if "overseer stopped" in s]
        assert told == ["the overseer stopped directing: its budget is spent"]
        assert len([e for e in town.events(operator, limit=1000) if e.verb == Verb.overseer_stopped]) == 1
        # The town keeps working: the refinery still plans through the same gateway, beads are still claimed.
        plan = town.plan_create(mayor, "Second goal")
        assert plan.convoy is not None
        assert town.bead_claim(mayor, plan.convoy.beads[0].id).status is BeadStatus.in_progress
        # A fresh loop (the town restarted) stops again without telling anyone twice.
        again = Overseer(town, overseer.model)
        town.goal_add(operator, "Fifth goal")
        assert [s.verb for s in again.tick()] == ["stopped"]
        assert len([s for s in mail_to_operator(town, operator) if "overseer stopped" in s]) == 1


def test_what_happened_while_the_town_was_down_is_picked_up_at_the_first_tick(
    store: Store, settings: Settings, operator: Agent, mayor: Agent
) -> None:
    with overseen(store, settings) as (town, overseer, _):
        landed = town.goal_add(operator, "Planned and landed while the town was down")
        waiting = town.goal_add(operator, "Added while the town was down")
        plan = town.plan_create(mayor, landed.text)
        assert plan.convoy is not None
        town.goal_link(mayor, landed.id, plan.convoy.id)
        with store.db.write() as tx:
            tx.execute("UPDATE beads SET status='done' WHERE id=?", (plan.convoy.id,))
        fresh = Overseer(town, overseer.model)  # started after all of it: its cursor is past these events
        steps = fresh.tick()
        assert ("achieved", f"goal {landed.id}") in [(s.verb, s.target) for s in steps]
        [directive] = town.directive_list(mayor)
        assert directive.goal == waiting.id and overseer_requests(store) == 1
        assert fresh.tick() == []


def test_a_model_that_fails_is_recorded_once_and_not_retried_every_tick(
    store: Store, settings: Settings, operator: Agent, mayor: Agent
) -> None:
    from gastown_mcp.standin import Fails

    with overseen(store, settings, Fails(400)) as (town, overseer, standin):
        town.goal_add(operator, "Greet people")
        [step] = overseer.tick()
        assert step.verb == "failed" and "400" in step.reason
        asked = len(standin.requests)
        for _ in range(5):
            assert overseer.tick() == []
        assert len(standin.requests) == asked
        [decided] = [e for e in town.events(operator, limit=100) if e.verb == Verb.overseer_decided]
        assert decided.after is not None and "400" in decided.after["error"]
        assert town.directive_list(mayor) == []


def test_a_goal_whose_work_crosses_its_budget_wakes_it_once_per_threshold(
    store: Store, settings: Settings, operator: Agent, mayor: Agent, add_agent: Callable[..., Agent]
) -> None:
    import anthropic

    clock = [1000.0]
    with overseen(store, settings) as (town, overseer, _):
        overseer.clock = lambda: clock[0]
        goal = town.goal_add(operator, "A goal with a small budget", budget_usd=0.0001)
        overseer.tick()  # plans it
        [directive] = town.directive_list(mayor)
        plan = town.plan_apply(mayor, {"title": "t", "items": [{"key": "a", "title": "A", "complexity": 1,
                               "acceptance": [{"text": "x", "verify": "true"}]}]})  # fmt: skip
        town.directive_update(mayor, directive.id, "done", convoy=plan.id)
        polecat = add_agent("nux", Role.polecat)
        town.set_agent_state(operator, "nux", polecat.state, "slung", hook=plan.beads[0].id)
        key = town.agent_token(operator, "nux").gateway_key
        gateway = overseer.model.model.base_url  # the town's gateway, as the overseer's model reaches it
        with anthropic.Anthropic(base_url=gateway, api_key=key) as client:  # the polecat's work, metered
            client.messages.create(
                model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "work " * 200}]
            )
        assert town.goal_show(operator, goal.id).spent_usd > 0.0001
        before = overseer_requests(store)
        assert overseer.tick() == []  # within BUDGET_CHECK_SECONDS of the last look: not yet
        clock[0] += 10
        steps = overseer.tick()
        assert any(s.verb == "issued" and f"escalate:about=goal:{goal.id}:budget" in s.target for s in steps)
        assert overseer_requests(store) == before + 1
        [decided] = [e for e in town.events(operator, limit=1000) if e.verb == Verb.overseer_decided][-1:]
        assert decided.after is not None and "budget (100% crossed)" in decided.after["triggers"][0]
        for _ in range(3):
            clock[0] += 10
            assert overseer.tick() == []
        assert overseer_requests(store) == before + 1
        [escalation] = [d for d in town.directive_list(operator) if d.kind.value == "escalate"]
        assert escalation.args["about"] == f"goal:{goal.id}:budget" and escalation.recipient == "operator"


def test_a_town_budget_crossing_eighty_percent_wakes_it_once(
    store: Store, settings: Settings, operator: Agent, mayor: Agent, add_agent: Callable[..., Agent]
) -> None:
    import anthropic

    clock = [1000.0]
    with overseen(store, settings) as (town, overseer, _):
        overseer.clock = lambda: clock[0]
        overseer.tick()  # the first look notes what is already crossed
        add_agent("nux", Role.polecat)
        key = town.agent_token(operator, "nux").gateway_key
        with anthropic.Anthropic(base_url=overseer.model.model.base_url, api_key=key) as client:
            client.messages.create(
                model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "work " * 200}]
            )
        spent = town.budget_set(operator, "town", tokens=10**9).tokens_spent  # what the town spent so far
        assert spent > 0
        town.budget_set(operator, "town", tokens=int(spent / 0.85))  # 85 % spent, not yet exhausted
        assert not town.budget(operator, "town")[0].exhausted
        before = overseer_requests(store)
        clock[0] += 10
        overseer.tick()
        assert overseer_requests(store) == before + 1
        [decided] = [e for e in town.events(operator, limit=1000) if e.verb == Verb.overseer_decided][-1:]
        assert decided.after is not None and "the town budget" in decided.after["triggers"][0]
        assert "80% crossed" in decided.after["triggers"][0]
        for _ in range(3):
            clock[0] += 10
            overseer.tick()
        assert overseer_requests(store) == before + 1  # once, not every look


@dataclass
class Waits:
    """An overseer model that judges each wake-up and directs nothing (the goal waits for the human)."""

    name: str = "waits"

    def next_turn(self, conversation: Conversation) -> Turn:
        return Turn([ToolCall(OVERSEER_TOOL, {"directives": [], "summary": "nothing to direct yet"})])


def test_a_restarted_loop_resumes_at_its_kept_cursor_and_spends_nothing_when_nothing_changed(
    store: Store, settings: Settings, operator: Agent, mayor: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    with overseen(store, settings, Waits()) as (town, overseer, _):
        town.goal_add(operator, "A goal the overseer judged and left waiting")
        assert [s.verb for s in overseer.tick()] == ["decided"]
        assert overseer_requests(store) == 1 and town.directive_list(mayor) == []
    # The town restarts: a new store, town and loop on the same town directory.
    again = Store(settings)
    try:
        with overseen(again, settings, Waits()) as (town, overseer, _):
            assert overseer.tick() == [] and overseer.tick() == []
            assert overseer_requests(again) == 1 and overseer.tally.model_requests == 0
        # What matters while it was down: the next start reads all of it after the kept cursor, in one tick
        # however long the trail (read a few events at a time here), and decides once.
        down = Town(again, settings)
        down.goal_add(operator, "Added while the overseer was down")
        for n in range(5):
            down.bead_create(operator, f"unrelated work {n}")
        down.goal_add(operator, "Added later")
        monkeypatch.setattr("gastown_mcp.supervisor.overseer.EVENTS_PER_READ", 2)
        with overseen(again, settings, Waits()) as (town, overseer, _):
            [decided] = overseer.tick()
            assert decided.verb == "decided" and overseer_requests(again) == 2
            assert overseer.tick() == [] and overseer_requests(again) == 2
            [event] = [e for e in town.events(operator, limit=1000) if e.verb == Verb.overseer_decided][-1:]
            assert event.after is not None and event.after["triggers"] == [
                "goal 2 was added: Added while the overseer was down",
                "goal 3 was added: Added later",
            ]
    finally:
        again.close()
