"""The factory end to end: real Docker, real Claude Code in the agent image, the scripted stand-in as the model.

One town (MCP server, gateway, witness) runs for the whole module; each test uses its own agents and beads,
and steps the witness with `tick()` instead of waiting for its loop.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from waits import until

from gastown_mcp.models import AgentState, BeadStatus, Message, MessageState, Role, Verb
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import Limits
from gastown_mcp.standin import Conversation
from gastown_mcp.standin.conversation import block_text
from gastown_mcp.supervisor.dogs import Freezer
from gastown_mcp.supervisor.witness import Action, Did

from .harness import E2E, OPERATOR, WAIT_FOR_RELEASE, Plan, bash, mcp, running_town

pytestmark = pytest.mark.docker

IDLE_SECONDS = 5.0


@pytest.fixture(scope="module")
def e2e(docker_runtime: DockerRuntime, agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    with running_town(tmp_path_factory.mktemp("e2e"), docker_runtime, agent_image, idle_seconds=IDLE_SECONDS) as t:
        yield t


def test_a_polecat_claims_its_bead_commits_in_its_own_repository_and_the_town_takes_the_branch_in(e2e: E2E) -> None:
    bead = e2e.bead("Add a CONTRIBUTING file")
    agent = e2e.spawn("furiosa", bead)
    status = e2e.wait_exit("furiosa")
    assert status.reason == "ok", e2e.logs("furiosa")

    done = e2e.town._store.beads.get(bead)
    assert done.status is BeadStatus.done, e2e.logs("furiosa")
    assert done.result is not None and done.result.commit
    assert done.awaiting_merge  # finished only once the merge queue lands it on main
    handed_in = f"refs/polecat/furiosa/{bead}"
    assert done.result.branch == handed_in
    assert e2e.git("rev-parse", handed_in) == done.result.commit
    assert f"{bead}.md" in e2e.git("show", "--name-only", "--format=", done.result.commit).splitlines()

    result = e2e.result_of("furiosa")
    assert result["is_error"] is False and result["permission_denials"] == []
    assert result["session_id"] == agent.metadata["session_id"]
    # What the gateway metered is what Claude Code was told, is what the stand-in reported.
    [metered] = e2e.town.usage(OPERATOR, "furiosa")
    seen = result["usage"]
    assert (metered.input_tokens, metered.output_tokens, metered.cache_creation_tokens, metered.cache_read_tokens) == (
        seen["input_tokens"],
        seen["output_tokens"],
        seen["cache_creation_input_tokens"],
        seen["cache_read_input_tokens"],
    )
    reported = [r.usage for r in e2e.requests_of("furiosa") if r.usage]
    assert metered.requests == len(reported)
    assert metered.input_tokens == sum(u["input_tokens"] for u in reported)
    assert metered.output_tokens == sum(u["output_tokens"] for u in reported)


def test_a_polecat_killed_mid_bead_gives_it_back_and_the_witness_has_a_second_polecat_complete_it(e2e: E2E) -> None:
    bead = e2e.bead("Add a LICENSE file")
    e2e.spawn("slit", bead, Plan([bash(WAIT_FOR_RELEASE, "Wait")]))
    until(lambda: e2e.asked_after("slit", "claim"), 60, "slit to claim its bead and start waiting")
    e2e.runtime.client.containers.get(e2e.town._store.agents.get("slit").metadata["container"]).kill()

    acted = until(lambda: [a for a in e2e.tick() if a.target == bead], 30, "the witness to requeue")
    assert [a.verb for a in acted] == [Did.requeued, Did.respawned]
    assert "slit" in acted[0].reason and "killed" in acted[0].reason
    assert e2e.town._store.agents.get("slit").metadata["exit_reason"] == "killed"
    released = [e for e in e2e.town._store.events.since(bead_id=bead) if e.verb == Verb.bead_released]
    assert len(released) == 1 and "killed" in str(released[0].after)

    second = str(e2e.town._store.beads.get(bead).assignee)
    assert second != "slit" and second in acted[1].reason
    assert e2e.wait_exit(second).reason == "ok"
    done = e2e.town._store.beads.get(bead)
    assert done.status is BeadStatus.done and done.attempts == 1, e2e.logs(second)
    assert done.result is not None and done.result.branch == f"refs/polecat/{second}/{bead}"
    assert e2e.git("rev-parse", f"refs/polecat/{second}/{bead}") == done.result.commit
    slit = e2e.town.agent("slit").metadata["worktree"]  # the first attempt's repository and branch are kept
    subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", slit, "rev-parse", "--verify", f"refs/heads/polecat/slit/{bead}"],
        check=True,
        capture_output=True,
    )


def test_a_polecat_whose_budget_runs_out_is_stopped_its_bead_blocked_and_the_mayor_told(e2e: E2E) -> None:
    bead = e2e.bead("Add a SECURITY file")
    e2e.spawn("toast", bead, Plan([bash(WAIT_FOR_RELEASE, "Wait")]))
    until(lambda: e2e.asked_after("toast", "claim"), 60, "toast to claim its bead and start waiting")
    e2e.town.budget_set(OPERATOR, "agent", "toast", tokens=1000)  # already spent far more
    e2e.release("toast")

    stopped = until(
        lambda: [a for a in e2e.tick() if a.verb == Did.stopped and a.target == "toast"], 60, "a budget stop"
    )
    assert "budget" in stopped[0].reason
    toast = e2e.town._store.agents.get("toast")
    assert (toast.state, toast.metadata["exit_reason"]) == (AgentState.exited, "budget")
    assert e2e.runtime.status(e2e.name, "toast").state == "exited"
    blocked = e2e.town._store.beads.get(bead)
    assert blocked.status is BeadStatus.blocked
    assert "budget" in blocked.notes.splitlines()[-1]
    mail = [m for m in e2e.town.inbox(e2e.mayor) if "toast" in m.subject]
    assert mail and "budget" in mail[0].subject and bead in mail[0].body
    assert e2e.town.usage(OPERATOR, "toast")[0].tokens_remaining == 0


@dataclass
class IdleRun:
    bead: str
    nudged: list[Action]
    nudge: Message
    tool_results: list[str]


@pytest.fixture(scope="module")
def idle_run(e2e: E2E) -> IdleRun:
    """A polecat that claims its bead, then waits in Bash making no call and changing no file; once the
    witness has nudged it, it is let go and calls town_heartbeat, then finishes its bead."""
    bead = e2e.bead("Add a CODE_OF_CONDUCT file")
    e2e.spawn("capable", bead, Plan([bash(WAIT_FOR_RELEASE, "Wait"), mcp("town_heartbeat")]))
    until(lambda: e2e.asked_after("capable", "claim"), 60, "capable to claim its bead and start waiting")
    nudged = until(
        lambda: [a for a in e2e.tick() if a.verb == Did.nudged and a.target == "capable"],
        IDLE_SECONDS + 30,
        "the witness to nudge the idle polecat",
    )
    assert e2e.town._store.agents.get("capable").state is AgentState.nudged
    [nudge] = e2e.town._store.messages.nudges("capable")
    assert nudge.state is MessageState.sent
    e2e.release("capable")
    assert e2e.wait_exit("capable").reason == "ok", e2e.logs("capable")
    results = [
        block_text(b.get("content", ""))
        for r in e2e.requests_of("capable")
        for m in Conversation(r.body).messages
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    return IdleRun(bead, nudged, nudge, results)


def test_an_idle_polecat_is_nudged_and_the_nudge_is_delivered_on_its_next_tool_call(
    e2e: E2E, idle_run: IdleRun
) -> None:
    assert "idle" in idle_run.nudged[0].reason
    assert "no tool call" in idle_run.nudge.body and idle_run.nudge.sender == "witness"
    assert e2e.town._store.messages.get(idle_run.nudge.id).state is MessageState.delivered
    assert e2e.town._store.beads.get(idle_run.bead).status is BeadStatus.done


def test_the_nudge_text_reaches_the_model_in_the_next_tool_result(idle_run: IdleRun) -> None:
    assert any(idle_run.nudge.body in text and "NUDGE from witness" in text for text in idle_run.tool_results)


def test_a_nudge_to_an_ended_session_resumes_it_with_the_nudge_as_the_prompt(e2e: E2E) -> None:
    bead = e2e.bead("Add a CHANGELOG file")
    agent = e2e.spawn("dag", bead)
    assert e2e.wait_exit("dag").reason == "ok"
    until(lambda: [a for a in e2e.tick() if a.verb == Did.exited and a.target == "dag"], 30, "the exit noticed")
    session = agent.metadata["session_id"]
    assert e2e.town._store.beads.get(bead).status is BeadStatus.done

    text = "Also mention the release date in the CHANGELOG (resume check 7f3a)."
    nudge = e2e.town.nudge(OPERATOR, "dag", text)
    actions = e2e.tick()
    assert [a.verb for a in actions if a.target == "dag"] == [Did.resumed]
    assert e2e.town._store.messages.get(nudge.id).state is MessageState.delivered
    resumed = e2e.town._store.agents.get("dag")
    assert resumed.state is AgentState.running and resumed.metadata["resumes"] == 1

    assert e2e.wait_exit("dag").reason == "ok", e2e.logs("dag")
    result = e2e.result_of("dag")
    assert result["session_id"] == session and "resume check 7f3a" in result["result"]
    last = Conversation(e2e.requests_of("dag")[-1].body)
    assert text in last.last_user_text
    # The same conversation went on: the earlier turns, up to bead_complete, came with the new prompt.
    earlier = [b.get("name") for m in last.messages if isinstance(m.get("content"), list) for b in m["content"]]
    assert "mcp__gastown__bead_complete" in earlier


def test_a_working_polecat_is_never_stopped_by_the_witness(e2e: E2E) -> None:
    bead = e2e.bead("Write a long design note")
    # About 20 s of steady work: well past two idle limits (2 x 5 s), with a call or a file change every ~2 s.
    work = [bash("sleep 2; date >> progress.log", "Work"), mcp("town_heartbeat")] * 9
    e2e.spawn("cheedo", bead, Plan(work))
    until(lambda: e2e.asked_after("cheedo", "claim"), 60, "cheedo to start")
    # A bystander polecat that makes no call at all, from now on: the witness nudges it, then finds it stalled,
    # once it has been silent for the idle limit twice. If that happens while cheedo still works, cheedo worked
    # through two idle limits under the same witness.
    e2e.town.agent_add(OPERATOR, "bystander", "polecat")
    e2e.town.set_agent_state(OPERATOR, "bystander", AgentState.running, "silent on purpose")
    seen: list[Action] = []
    while_cheedo_worked: list[Did] = []

    def cheedo_exited() -> bool:
        acted = e2e.tick()
        seen.extend(a for a in acted if a.target in ("cheedo", bead))
        if e2e.runtime.status(e2e.name, "cheedo").state != "running":
            return True
        while_cheedo_worked.extend(a.verb for a in acted if a.target == "bystander")
        return False

    try:
        until(cheedo_exited, 120, "cheedo to finish", every_s=0.5)
    finally:
        e2e.town.agent_remove(OPERATOR, "bystander", "the test is over")
    seen += [a for a in e2e.tick() if a.target in ("cheedo", bead)]
    assert while_cheedo_worked == [Did.nudged, Did.stalled], "cheedo's work was too short to prove anything"
    assert [a.verb for a in seen] == [Did.exited], seen
    assert e2e.town._store.beads.get(bead).status is BeadStatus.done
    assert not e2e.town._store.messages.nudges("cheedo")


def test_estop_freezes_five_claude_code_polecats_mid_bead_no_model_call_passes_and_after_thaw_all_finish(
    e2e: E2E,
) -> None:
    """The whole drill with real Claude Code: frozen within 5 s by Docker's own state, no model request while
    frozen (counted at the stand-in), nothing counted as a failure, and every bead finishes after the thaw."""
    names = [f"drill{i}" for i in range(5)]
    beads = {name: e2e.bead(f"Estop drill for {name}") for name in names}
    for name in names:
        e2e.spawn(name, beads[name], Plan([bash(WAIT_FOR_RELEASE, "Wait")]))
    until(lambda: all(e2e.asked_after(n, "claim") for n in names), 180, "all five to be mid-bead")

    began = time.monotonic()
    e2e.town.estop(OPERATOR, "drill with real polecats")
    try:
        freezer = Freezer(e2e.town)  # what the town process runs every second

        def all_frozen() -> bool:
            freezer.tick()
            return sorted(set(e2e.runtime.paused(e2e.name)) & set(names)) == names

        until(all_frozen, 30, "every drill polecat to be paused")
        frozen_after = time.monotonic() - began
        asked = {n: len(e2e.requests_of(n)) for n in names}
        for name in names:
            e2e.release(name)  # their Bash calls may end now, but nothing in a paused container runs
        time.sleep(3)
        assert {n: len(e2e.requests_of(n)) for n in names} == asked  # no model call passed while frozen
        assert not [a for a in e2e.tick() if a.target in names or a.target in beads.values()]
    finally:
        e2e.town.thaw(OPERATOR, "drill over")
        Freezer(e2e.town).tick()
    assert frozen_after < 5.0, f"frozen after {frozen_after:.1f} s"
    for name in names:
        assert e2e.wait_exit(name, 180).reason == "ok", e2e.logs(name)
        bead = e2e.town._store.beads.get(beads[name])
        assert bead.status is BeadStatus.done and bead.attempts == 0, e2e.logs(name)
    assert not [a for a in e2e.tick() if a.target in beads.values()]  # nothing for the witness to judge


def test_a_polecat_that_fills_its_disk_gets_disk_quota_exceeded_and_still_finishes_its_bead(e2e: E2E) -> None:
    """The agents' directories are on the town's capped btrfs disk: a polecat with a 16 MB cap that writes 64 MB
    into its repository is stopped by the kernel at 16 MB; it removes the file and lands its work."""
    bead = e2e.bead("Try to fill the disk")
    fill = "dd if=/dev/zero of=big bs=1M count=64 2>&1; du -m big; rm -f big"
    e2e.script.plans["hog"] = Plan([bash(fill, "Fill the disk")])
    e2e.fleet.spawn(
        OPERATOR.name,
        Role.polecat,
        rig=e2e.rig.name,
        bead=bead,
        name="hog",
        limits=Limits(disk_mb=16),
        lease_seconds=e2e.town.settings.lease.seconds,
    )
    assert e2e.wait_exit("hog").reason == "ok", e2e.logs("hog")
    results = [r.text for req in e2e.requests_of("hog") for r in Conversation(req.body).last_tool_results()]
    assert any("Disk quota exceeded" in text for text in results), "\n".join(t[:300] for t in results)
    assert e2e.town.agents_disk_usage(OPERATOR)["hog"][1] == 16
    assert e2e.town._store.beads.get(bead).status is BeadStatus.done
