"""A whole town for end-to-end tests: `TownProcess` with the Docker runtime on a background event loop, the
scripted stand-in as the model, a sample rig, and a witness the tests step themselves.

The stand-in plays each agent from a per-agent `Plan` (found by the name in Claude Code's task prompt), so
one module-scoped town serves tests that need different behaviour. A plan can make Claude Code wait inside
a Bash call until the test releases it: the agent is then alive but idle, at a moment the test chooses.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal

from gastown_mcp import rigs
from gastown_mcp.config import (
    GatewaySection,
    LeaseSection,
    RuntimeSection,
    ServerSection,
    Settings,
    TownSection,
    WitnessSection,
)
from gastown_mcp.daemon import RunState, TownProcess
from gastown_mcp.models import Agent, Role
from gastown_mcp.rigs import Rig
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import ContainerStatus
from gastown_mcp.serving import serve
from gastown_mcp.standin import (
    Conversation,
    Polecat,
    RecordedRequest,
    Standin,
    Text,
    ToolCall,
    Turn,
    build_standin,
)
from gastown_mcp.standin.polecat import TOOL_PREFIX, find_bead_id
from gastown_mcp.supervisor.witness import Action, Witness
from gastown_mcp.town import Town
from gastown_mcp.town import operator as make_operator
from gastown_mcp.town.fleet import Fleet

AGENT_IN_TASK = re.compile(r"\bYou are ([a-z][a-z0-9-]*)\.")
STEP = re.compile(r"^toolu_standin_([a-z]+)_")
SENTINEL = "gastown-go"
# Waits (at most 90 s, inside Claude Code's 2-minute Bash limit) for the test to create the sentinel file in
# the agent repository's git dir: outside its work tree, so waiting changes no file the witness watches.
WAIT_FOR_RELEASE = (
    "d=$(git rev-parse --absolute-git-dir) && i=0 && "
    f'while [ ! -e "$d/{SENTINEL}" ] && [ "$i" -lt 900 ]; do sleep 0.1; i=$((i+1)); done; echo released'
)
OPERATOR = make_operator()


def bash(command: str, description: str = "Run a command") -> tuple[str, dict[str, Any]]:
    return "Bash", {"command": command, "description": description}


def mcp(tool: str, **args: Any) -> tuple[str, dict[str, Any]]:
    return TOOL_PREFIX + tool, args


def agent_named_in(conversation: Conversation) -> str | None:
    for text in conversation.user_texts():
        m = AGENT_IN_TASK.search(text)
        if m:
            return m.group(1)
    return None


def step_of(tool_use_id: str) -> str | None:
    m = STEP.match(tool_use_id)
    return m.group(1) if m else None


def is_resumed(conversation: Conversation) -> bool:
    """A fresh prompt after an earlier exchange: Claude Code resumed the session with a new `-p` prompt."""
    msgs = conversation.messages
    return (
        len(msgs) > 1
        and msgs[-1].get("role") == "user"
        and any(m.get("role") == "assistant" for m in msgs)
        and not conversation.last_tool_results()
    )


@dataclass
class Plan:
    """The polecat script with extra tool calls after the claim; then it writes, commits and completes
    (`finish`) or ends its turn."""

    after_claim: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish: bool = True
    name: str = "plan"
    polecat: Polecat = field(default_factory=Polecat)

    def next_turn(self, conversation: Conversation) -> Turn:
        calls = conversation.last_tool_uses()
        step = step_of(calls[-1].id) if calls else None
        if step != "claim" and not (step or "").startswith("extra"):
            return self.polecat.next_turn(conversation)
        failed = [r for r in conversation.last_tool_results() if r.is_error]
        if failed:
            return Turn([Text(f"Stopping: {calls[-1].name} failed: {failed[0].text[:300]}")])
        index = 0 if step == "claim" else ord(str(step)[-1]) - ord("a") + 1
        if index < len(self.after_claim):
            tool, args = self.after_claim[index]
            call_id = f"toolu_standin_extra{chr(ord('a') + index)}_{secrets.token_hex(6)}"
            return Turn([Text(f"Next: extra step {index + 1}."), ToolCall(name=tool, input=args, id=call_id)])
        if not self.finish:
            return Turn([Text("Stopping here, as planned.")])
        bead = find_bead_id(conversation) or "unknown"
        content = f"# {bead}\n\nWork for bead {bead}, written by the gastown scripted stand-in.\n"
        command = f"printf %s {shlex.quote(content)} > {shlex.quote(bead + '.md')}"
        call_id = f"toolu_standin_write_{secrets.token_hex(6)}"
        return Turn([Text("Next: write."), ToolCall(name="Bash", input=bash(command, "Write the work")[1], id=call_id)])


@dataclass
class ByAgent:
    """Routes each request to the plan of the agent its task prompt names (the polecat script otherwise)."""

    plans: dict[str, Plan] = field(default_factory=dict)
    name: str = "by-agent"
    default: Polecat = field(default_factory=Polecat)

    def next_turn(self, conversation: Conversation) -> Turn:
        if TOOL_PREFIX + "bead_show" not in conversation.tools:
            return self.default.next_turn(conversation)  # Claude Code's helper requests
        if is_resumed(conversation):
            return Turn([Text(f"Resumed; I read: {conversation.last_user_text[:500]}")])
        plan = self.plans.get(agent_named_in(conversation) or "")
        return (plan or self.default).next_turn(conversation)


@dataclass
class E2E:
    """One running town and what tests need to drive it."""

    town: Town
    fleet: Fleet
    runtime: DockerRuntime
    witness: Witness
    standin: Standin
    script: ByAgent
    rig: Rig
    state: RunState
    process: TownProcess
    mayor: Agent
    actions: list[Action] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.town.settings.town.name

    # -- work ---------------------------------------------------------------------------------------
    def bead(self, title: str) -> str:
        return self.town.bead_create(OPERATOR, title).id

    def spawn(self, name: str, bead: str, plan: Plan | None = None) -> Agent:
        if plan is not None:
            self.script.plans[name] = plan
        return self.fleet.spawn(
            OPERATOR.name,
            Role.polecat,
            rig=self.rig.name,
            bead=bead,
            name=name,
            lease_seconds=self.town.settings.lease.seconds,
        )

    def release(self, agent: str) -> None:
        """Let an agent waiting in `WAIT_FOR_RELEASE` go on."""
        repository = Path(self.town._store.agents.get(agent).metadata["worktree"])
        (repository / ".git" / SENTINEL).write_text("go\n")

    def tick(self) -> list[Action]:
        done = self.witness.tick()
        self.actions += done
        return done

    # -- observing ----------------------------------------------------------------------------------
    def requests_of(self, agent: str) -> list[RecordedRequest]:
        return [
            r
            for r in list(self.standin.requests)
            if r.path == "/v1/messages" and agent_named_in(Conversation(r.body)) == agent
        ]

    def asked_after(self, agent: str, step: str) -> bool:
        """Whether the model has been asked for the turn after `step` (so the agent is now running its answer)."""
        for r in self.requests_of(agent):
            uses = Conversation(r.body).last_tool_uses()
            if uses and step_of(uses[-1].id) == step and r.usage is not None:
                return True
        return False

    def wait_exit(self, agent: str, timeout_s: float = 120) -> ContainerStatus:
        status = self.runtime.wait(self.name, agent, timeout_s)
        assert status.state == "exited", f"{agent} still {status.state} after {timeout_s}s:\n{self.logs(agent)}"
        return status

    def logs(self, agent: str) -> str:
        return self.runtime.logs(self.name, agent, tail=2000)

    def result_of(self, agent: str) -> dict[str, Any]:
        """Claude Code's final json `result` line in the agent's log."""
        for line in reversed(self.logs(agent).splitlines()):
            if line.startswith("{") and '"type":"result"' in line:
                data: dict[str, Any] = json.loads(line)
                return data
        raise AssertionError(f"no result line in the log of {agent}:\n{self.logs(agent)[-3000:]}")

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.rig.repo, capture_output=True, text=True, check=True)
        return done.stdout.strip()


class BackgroundTown(TownProcess):
    """`TownProcess` on a worker thread's event loop: signals stay with the main thread (pytest's)."""

    async def _signals(self) -> None:
        return


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"],
    ):
        subprocess.run(["git", *cmd], cwd=path, check=True)
    (path / "README.md").write_text("sample\n")
    subprocess.run(["git", "add", "."], cwd=path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "readme"], cwd=path, check=True
    )
    return path


@contextlib.contextmanager
def running_town(tmp: Path, runtime: DockerRuntime, image: str, *, idle_seconds: float) -> Iterator[E2E]:
    """Stand-in, town process and sample rig; on exit the town shuts down and its containers and network go."""
    name = f"e2e{secrets.token_hex(3)}"
    script = ByAgent()
    standin = build_standin(script)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(serve(standin.app)) as standin_url:
        town_dir = tmp / "town"
        town_dir.mkdir()
        settings = Settings(
            town_dir=town_dir,
            town=TownSection(name=name),
            # A short lease makes calls renew it (and last_seen) every 3 s, under the idle threshold.
            lease=LeaseSection(seconds=60),
            server=ServerSection(port=0),
            gateway=GatewaySection.model_validate(
                {
                    "port": 0,
                    "default_upstream": "standin",
                    "upstreams": {"standin": {"base_url": standin_url, "key_env": "STANDIN_KEY"}},
                }
            ),
            runtime=RuntimeSection(image=image),
            # The loop of the town process ticks once at start; the tests step their own witness.
            witness=WitnessSection(interval_seconds=3600, idle_seconds=idle_seconds),
        )
        rig = rigs.add_rig(town_dir, "sample", str(git_repo(tmp / "sample")))
        process = BackgroundTown(settings, {"STANDIN_KEY": "standin-key"}, runtime)
        ready = threading.Event()
        running = portal.start_task_soon(process.run, lambda _state: ready.set())
        running.add_done_callback(lambda _future: ready.set())  # a town that fails to start wakes us too
        try:
            assert ready.wait(60), "the town process did not start within 60 s"
            if running.done():
                running.result()  # raises what stopped it
            assert process.town is not None and process.town._fleet is not None and process.state is not None
            town = process.town
            mayor = town.agent_add(OPERATOR, "mayor", Role.mayor.value).agent
            yield E2E(
                town=town,
                fleet=town._fleet,
                runtime=runtime,
                witness=Witness(town),
                standin=standin,
                script=script,
                rig=rig,
                state=process.state,
                process=process,
                mayor=mayor,
            )
        finally:
            portal.call(process.stop)
            running.result(timeout=60)
            runtime.cleanup(name)
            runtime.remove_network(name)
