"""Role permissions through `Town`: who may do what, and that a refused call changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gastown_mcp.config import LimitsSection
from gastown_mcp.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from gastown_mcp.models import Agent, AgentState, Bead, BeadStatus, DepKind, Role
from gastown_mcp.store import Credentials
from gastown_mcp.town import Town

AddAgent = Callable[..., Agent]


@pytest.fixture
def work(town: Town, operator: Agent) -> list[Bead]:
    return [town.bead_create(operator, f"work {i}") for i in range(3)]


def refused(town: Town, call: Callable[[], Any], match: str) -> None:
    """The call raises Forbidden with `match` in its message and writes nothing."""
    before = town._store.events.last_id()
    beads = town._store.db.query("SELECT * FROM beads ORDER BY id")
    with pytest.raises(Forbidden, match=match):
        call()
    assert town._store.events.last_id() == before
    assert [tuple(r) for r in town._store.db.query("SELECT * FROM beads ORDER BY id")] == [tuple(r) for r in beads]


# -- polecat ---------------------------------------------------------------------------------------
def test_a_polecat_claims_updates_notes_and_completes_its_own_bead(
    town: Town, add_agent: AddAgent, work: list[Bead]
) -> None:
    polecat = add_agent("polecat-3")
    bead = town.bead_claim(polecat)
    assert bead.assignee == "polecat-3"
    assert town.bead_update(polecat, bead.id, notes="halfway").notes == "halfway"
    assert town.bead_comment(polecat, bead.id, "pushed a branch") > 0
    done = town.bead_complete(polecat, bead.id, "fixed it", branch="fix/x", commit="abc123")
    assert done.status is BeadStatus.done and done.result is not None and done.result.commit == "abc123"


def test_a_polecat_may_not_complete_or_release_a_bead_claimed_by_another(
    town: Town, add_agent: AddAgent, work: list[Bead]
) -> None:
    mine, theirs = add_agent("polecat-3"), add_agent("polecat-5")
    bead = town.bead_claim(theirs, work[0].id)
    refused(
        town,
        lambda: town.bead_complete(mine, bead.id, "not mine"),
        f"^polecat-3 may not complete {bead.id}: it is claimed by polecat-5$",
    )
    refused(
        town,
        lambda: town.bead_release(mine, bead.id, "not mine"),
        f"^polecat-3 may not release {bead.id}: it is claimed by polecat-5$",
    )
    refused(town, lambda: town.bead_update(mine, bead.id, notes="x"), "it is claimed by polecat-5")
    refused(
        town,
        lambda: town.bead_update(mine, bead.id, status="blocked", reason="x"),
        "it is claimed by polecat-5",
    )


def test_a_polecat_may_not_complete_a_bead_nobody_holds(town: Town, add_agent: AddAgent, work: list[Bead]) -> None:
    polecat = add_agent("polecat-3")
    refused(
        town,
        lambda: town.bead_complete(polecat, work[0].id, "s"),
        f"polecat-3 may not complete {work[0].id}: it is not claimed by you",
    )


def test_a_polecat_may_not_claim_a_bead_another_holds(town: Town, add_agent: AddAgent, work: list[Bead]) -> None:
    mine, theirs = add_agent("polecat-3"), add_agent("polecat-5")
    town.bead_claim(theirs, work[0].id)
    with pytest.raises(Conflict, match=f"bead {work[0].id} is claimed by polecat-5"):
        town.bead_claim(mine, work[0].id)


def test_a_polecat_releases_its_own_bead(town: Town, add_agent: AddAgent, work: list[Bead]) -> None:
    polecat = add_agent("polecat-3")
    bead = town.bead_claim(polecat, work[1].id)
    released = town.bead_release(polecat, bead.id, "cannot reproduce")
    assert (released.status, released.assignee, released.attempts) == ("open", None, 1)


def test_a_polecat_may_block_its_bead_with_a_reason(town: Town, add_agent: AddAgent, work: list[Bead]) -> None:
    polecat = add_agent("polecat-3")
    bead = town.bead_claim(polecat, work[0].id)
    with pytest.raises(InvalidInput, match="needs a reason"):
        town.bead_update(polecat, bead.id, status="blocked")
    blocked = town.bead_update(polecat, bead.id, status="blocked", reason="needs credentials")
    assert blocked.status is BeadStatus.blocked and "needs credentials" in blocked.notes


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"title": "t"}, "not title"),
        ({"description": "d"}, "not description"),
        ({"acceptance": "a"}, "not acceptance"),
        ({"type": "bug"}, "not type"),
        ({"priority": 0}, "not priority"),
        ({"labels": ["x"]}, "not labels"),
        ({"metadata": {"k": 1}}, "not metadata"),
        ({"status": "cancelled"}, "may only set status 'blocked'"),
        ({"status": "open"}, "may only set status 'blocked'"),
    ],
)
def test_a_polecat_may_change_only_notes_and_blocked_status_on_its_bead(
    town: Town, add_agent: AddAgent, work: list[Bead], fields: dict[str, Any], match: str
) -> None:
    polecat = add_agent("polecat-3")
    bead = town.bead_claim(polecat, work[0].id)
    refused(town, lambda: town.bead_update(polecat, bead.id, **fields), match)


def test_a_polecat_may_not_link_beads(town: Town, add_agent: AddAgent, work: list[Bead]) -> None:
    polecat = add_agent("polecat-3")
    refused(town, lambda: town.bead_link(polecat, work[0].id, work[1].id), r"polecat-3 \(polecat\) may not link beads")


def test_a_polecat_may_create_side_work_but_not_set_parent_or_blockers(
    town: Town, add_agent: AddAgent, work: list[Bead]
) -> None:
    polecat = add_agent("polecat-3")
    refused(town, lambda: town.bead_create(polecat, "child", parent=work[0].id), "not set parent or blockers")
    refused(town, lambda: town.bead_create(polecat, "later", blocked_by=[work[0].id]), "not set parent or blockers")
    assert town.bead_create(polecat, "side work").created_by == "polecat-3"


def test_a_polecat_may_not_nudge_list_agents_or_see_the_town_status(town: Town, add_agent: AddAgent) -> None:
    polecat = add_agent("polecat-3")
    add_agent("polecat-5")
    refused(town, lambda: town.nudge(polecat, "polecat-5", "hurry"), "may not nudge agents")
    refused(town, lambda: town.agents(polecat), "may not list agents")
    refused(town, lambda: town.status(polecat), "may not see the town status")
    refused(town, lambda: town.agent_add(polecat, "polecat-9", "polecat"), "may not add agents")


# -- witness ---------------------------------------------------------------------------------------
def test_a_witness_releases_any_bead_and_nudges(town: Town, add_agent: AddAgent, work: list[Bead]) -> None:
    witness, polecat = add_agent("witness-1", "witness"), add_agent("polecat-3")
    bead = town.bead_claim(polecat, work[0].id)
    released = town.bead_release(witness, bead.id, "polecat-3 stalled")
    assert (released.status, released.assignee) == ("open", None)
    assert town.nudge(witness, "polecat-3", "are you stuck?").recipient == "polecat-3"
    assert {a.name for a in town.agents(witness)} == {"witness-1", "polecat-3"}
    assert town.status(witness).beads_by_status == {"open": 3}


def test_a_witness_may_not_create_claim_complete_update_or_link(
    town: Town, add_agent: AddAgent, work: list[Bead]
) -> None:
    witness, polecat = add_agent("witness-1", "witness"), add_agent("polecat-3")
    held = town.bead_claim(polecat, work[0].id)
    refused(town, lambda: town.bead_create(witness, "new"), r"witness-1 \(witness\) may not create beads")
    refused(town, lambda: town.bead_claim(witness, work[1].id), "may not claim beads")
    refused(town, lambda: town.bead_complete(witness, held.id, "s"), f"may not complete {held.id}")
    refused(town, lambda: town.bead_update(witness, held.id, notes="n"), f"may not update {held.id}")
    refused(town, lambda: town.bead_link(witness, work[1].id, work[2].id), "may not link beads")
    refused(town, lambda: town.bead_comment(witness, held.id, "hi"), "may not comment")


# -- mayor and the other planners ------------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.mayor, Role.refinery, Role.deacon, Role.overseer])
def test_planners_may_do_every_bead_operation(town: Town, add_agent: AddAgent, role: Role) -> None:
    boss, polecat = add_agent("boss", role), add_agent("polecat-3")
    epic = town.bead_create(boss, "epic", type="epic", priority=1, labels=["plan"])
    a = town.bead_create(boss, "a", parent=epic.id)
    b = town.bead_create(boss, "b", blocked_by=[a.id])
    assert town.bead_link(boss, b.id, epic.id, "related").kind is DepKind.related
    edited = town.bead_update(
        boss, a.id, title="A", description="d", acceptance="x", notes="n", type="bug", priority=0, labels=["l"]
    )
    assert (edited.title, edited.type, edited.priority, edited.labels) == ("A", "bug", 0, ["l"])
    held = town.bead_claim(polecat, a.id)
    town.bead_comment(boss, held.id, "looks good")
    assert town.bead_complete(boss, held.id, "done on its behalf").status is BeadStatus.done
    assert town.bead_claim(boss, b.id).assignee == "boss"
    assert town.bead_release(boss, b.id, "reassign").status is BeadStatus.open
    assert town.bead_update(boss, b.id, status="cancelled", reason="dropped").status is BeadStatus.cancelled
    assert town.bead_update(boss, b.id, status="open").status is BeadStatus.open
    assert town.nudge(boss, "polecat-3", "b is back").kind == "nudge"
    assert town.mail_send(boss, "polecat-3", "plan", "see epic").kind == "mail"


@pytest.mark.parametrize("role", [Role.mayor, Role.refinery, Role.deacon, Role.witness, Role.polecat, Role.dog])
def test_only_the_overseer_and_operator_manage_agents(town: Town, add_agent: AddAgent, role: Role) -> None:
    agent = add_agent("someone", role)
    refused(town, lambda: town.agent_add(agent, "new-one", "polecat"), "may not add agents")
    refused(town, lambda: town.agent_remove(agent, "someone"), "may not remove agents")
    refused(town, lambda: town.agent_token(agent, "someone"), "may not issue tokens")


# -- dog -------------------------------------------------------------------------------------------
def test_a_dog_reads_but_does_not_touch_beads(town: Town, add_agent: AddAgent, work: list[Bead]) -> None:
    dog, polecat = add_agent("dog-1", "dog"), add_agent("polecat-3")
    held = town.bead_claim(polecat, work[0].id)
    assert town.bead_show(dog, work[1].id).id == work[1].id
    assert len(town.bead_list(dog)) == 3 and len(town.bead_ready(dog)) == 2
    assert town.status(dog).ready == 2
    assert len(town.agents(dog)) == 2
    assert town.inbox(dog) == []
    assert town.mail_send(dog, "polecat-3", "report", "nightly check passed").sender == "dog-1"
    for call, match in [
        (lambda: town.bead_create(dog, "x"), "may not create beads"),
        (lambda: town.bead_claim(dog, work[1].id), "may not claim"),
        (lambda: town.bead_update(dog, work[1].id, notes="n"), "may not update"),
        (lambda: town.bead_comment(dog, work[1].id, "c"), "may not comment"),
        (lambda: town.bead_complete(dog, held.id, "s"), "may not complete"),
        (lambda: town.bead_release(dog, held.id), "may not release"),
        (lambda: town.bead_link(dog, work[1].id, work[2].id), "may not link"),
        (lambda: town.nudge(dog, "polecat-3", "x"), "may not nudge"),
    ]:
        refused(town, call, match)


# -- agents and tokens -----------------------------------------------------------------------------
def test_the_operator_adds_agents_whose_tokens_authenticate(
    town: Town, operator: Agent, credentials: dict[str, Credentials], add_agent: AddAgent
) -> None:
    polecat = add_agent("polecat-3", rig="web")
    creds = credentials["polecat-3"]
    assert creds.token.startswith("gt_") and creds.gateway_key.startswith("gtk_")
    assert town.authenticate(creds.token) == polecat
    assert (polecat.role, polecat.rig, polecat.state) == (Role.polecat, "web", AgentState.requested)
    stored = town._store.db.query_one("SELECT token_hash FROM agents WHERE name='polecat-3'")["token_hash"]
    assert creds.token not in stored


@pytest.mark.parametrize("token", ["", "gt_nope", "x" * 200])
def test_an_unknown_token_does_not_authenticate(town: Town, add_agent: AddAgent, token: str) -> None:
    add_agent("polecat-3")
    with pytest.raises(Unauthorized, match="unknown or revoked token"):
        town.authenticate(token)


@pytest.mark.parametrize("name", ["", "Polecat", "1abc", "has space", "operator", "a" * 41])
def test_a_bad_agent_name_is_refused(town: Town, operator: Agent, name: str) -> None:
    with pytest.raises(InvalidInput, match="is not allowed"):
        town.agent_add(operator, name, "polecat")


def test_an_agent_name_is_taken_until_it_is_removed(town: Town, operator: Agent, add_agent: AddAgent) -> None:
    add_agent("polecat-3")
    with pytest.raises(Conflict, match="already exists"):
        town.agent_add(operator, "polecat-3", "polecat")
    town.agent_remove(operator, "polecat-3")
    assert town.agent_add(operator, "polecat-3", "witness").agent.role is Role.witness


def test_a_removed_agents_token_stops_working_and_its_beads_are_released(
    town: Town, operator: Agent, credentials: dict[str, Credentials], add_agent: AddAgent, work: list[Bead]
) -> None:
    polecat = add_agent("polecat-3")
    two = Town(town._store, town.settings.model_copy(update={"limits": LimitsSection(polecat_held_beads=2)}))
    held = [two.bead_claim(polecat, work[0].id), two.bead_claim(polecat, work[1].id)]
    removed = town.agent_remove(operator, "polecat-3", "done for the day")
    assert removed.state is AgentState.removed
    with pytest.raises(Unauthorized):
        town.authenticate(credentials["polecat-3"].token)
    for bead in held:
        after = town._store.beads.get(bead.id)
        assert (after.status, after.assignee) == ("open", None)
    assert {s.id for s in town.bead_ready(operator)} == {b.id for b in work}
    with pytest.raises(NotFound, match="was removed"):
        town.agent("polecat-3")
    with pytest.raises(NotFound, match="no agent 'polecat-3' to send to"):
        town.mail_send(operator, "polecat-3", "s", "b")
    assert "polecat-3" not in {a.name for a in town.agents(operator)}


def test_a_new_token_replaces_the_old_one(
    town: Town, operator: Agent, credentials: dict[str, Credentials], add_agent: AddAgent
) -> None:
    add_agent("polecat-3")
    fresh = town.agent_token(operator, "polecat-3")
    with pytest.raises(Unauthorized):
        town.authenticate(credentials["polecat-3"].token)
    assert town.authenticate(fresh.token).name == "polecat-3"
