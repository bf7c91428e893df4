"""The mayor as an AI: Claude Code in its own container, with the mayor's tools and no repository of its own.

`mayor_start` records a mayor agent (no rig, so no worktree: it plans and directs, it cannot do a polecat's
job) and launches it when this process holds the runtime; an ended mayor session is resumed instead of
replaced, so its transcript carries on. Directives reach it as nudges: on its next tool result while it runs,
or as the prompt the witness resumes its ended session with (GUPP).

Its Claude Code is cut down to the town's tools: no built-in tools (`--tools ""`: no Bash, Edit, Read ... so
role discipline is enforced by what it can call) and a short system prompt of its own instead of Claude Code's
(`--system-prompt`; the mayor's role prompt is appended as for every agent). Claude Code's default prompt and
built-in tool list are ~19k of the ~22k tokens each request would otherwise send. Of the mayor role's own tools,
those for a polecat's or the refinery's job (claim, complete, release, link, heartbeat, spawn, set a budget,
usage, merge admin) are hidden from the AI mayor's session (`--disallowedTools`): its directives never need
them, and each tool's definition is sent with every request. The operator acting as mayor keeps them all.
"""

from __future__ import annotations

from gastown_mcp.errors import Conflict
from gastown_mcp.models import Agent, AgentState, Role
from gastown_mcp.town import guard
from gastown_mcp.town.fleet import FleetAPI, request_agent, role_limits

AGENT_COMMAND = "/opt/gastown/run-claude.sh"  # the image's Claude Code launcher; its arguments go to Claude Code
SYSTEM_PROMPT = (
    "You are the mayor of a Gas Town, a factory of AI coding agents. You act only through the town's MCP tools "
    "(mcp__gastown__*): you plan and direct, polecats do the work. Be brief, and end your turn when nothing is "
    "waiting for you."
)
# The mayor role's tools its AI session is not given (see the module docstring); `tools_for(Role.mayor)` has each.
HIDDEN_TOOLS = (
    "bead_claim",
    "bead_complete",
    "bead_release",
    "bead_link",
    "town_heartbeat",
    "town_spawn",
    "town_budget_set",
    "town_usage",
    "merge_show",
    "merge_retry",
    "merge_reject",
)
TOOL_PREFIX = "mcp__gastown__"
COMMAND = (
    AGENT_COMMAND,
    "--tools",
    "",
    "--disallowedTools",
    ",".join(TOOL_PREFIX + tool for tool in HIDDEN_TOOLS),
    "--system-prompt",
    SYSTEM_PROMPT,
)
# With no directive waiting, a fresh mayor's launcher ends at once without a model call (`wait`): an idle
# mayor costs no tokens. The first directive the overseer issues reaches it as a nudge and resumes it, which
# starts its Claude Code session then, under the session id the town recorded.
START_PROMPT = (
    "You are {name}. Read your directives with directive_list (and town_inbox), carry out each one with the town "
    "tools, and report it with directive_update."
)


class MayorAPI(FleetAPI):
    def mayor_start(self, actor: Agent, name: str = "mayor") -> Agent:
        """Run the mayor as Claude Code in a container (or resume its ended session)."""
        self._require(actor, "town.spawn", "start the mayor")
        name = guard.agent_name(name)
        found = self._store.agents.find(name)
        if found is not None and found.state is not AgentState.removed:
            if found.role is not Role.mayor:
                raise Conflict(f"agent {name!r} is a {found.role.value}; start the mayor under another --name")
            if found.state.alive or found.launching:
                raise Conflict(f"{name} is already {found.state.value}; stop it first with `gastown agent stop {name}`")
            if found.state is AgentState.exited and found.metadata.get("container") is not None:
                fleet = self._the_fleet()
                prompt = START_PROMPT.format(name=name)
                return fleet.resume(actor.name, name, prompt)
            raise Conflict(
                f"{name} is a mayor you run yourself (added with `gastown agent add`); remove it with "
                f"`gastown agent remove {name}` to run it in a container, or pass another --name"
            )
        waiting = self._waiting_directives(name)
        agent = request_agent(
            self._store,
            self.settings.town_dir,
            role_limits(self.settings),
            actor.name,
            Role.mayor,
            command=COMMAND,
            lease_seconds=self.settings.lease.seconds,
            name=name,
            task=START_PROMPT.format(name=name) if waiting else None,
            wait=not waiting,
        )
        self._intent_recorded()
        if self._fleet is None:
            return agent  # intent recorded; the town's reconciler starts it
        return self._fleet.launch(actor.name, name, self.settings.lease.seconds) or self._fleet.started_elsewhere(name)

    def _waiting_directives(self, name: str) -> bool:
        """Whether a directive addressed to mayor `name` is still to be taken or finished."""
        return bool(self._store.goals.directives(("issued", "acknowledged"), name, 1))
