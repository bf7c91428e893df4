"""Agents in the town API: identity (tokens and gateway keys), the agent table, states, heartbeats, status.

The operator at the CLI is not an agent row: `operator()` acts with overseer rights. Supervisors act as
`system_agent`s under their role, so every change they make is checked and audited like anyone else's.
"""

from __future__ import annotations

from pydantic import BaseModel

from gastown_mcp.errors import NotFound, Unauthorized
from gastown_mcp.models import Agent, AgentState, BeadSummary, Role, TownStatus
from gastown_mcp.store import Credentials, glance
from gastown_mcp.town import guard
from gastown_mcp.town.base import OPERATOR, Caller, TownBase, operator


class Heartbeat(BaseModel):
    agent: str
    holding: list[BeadSummary]
    lease_expires_at: str | None
    pending_nudges: int


class AgentsAPI(TownBase):
    # -- identity ----------------------------------------------------------------------------------
    def caller(self, *, token: str | None = None, name: str | None = None) -> Caller:
        """The agent behind an MCP bearer `token` (or the fixed agent `name` of a stdio server) and whether a
        nudge waits for it: one read of the store when nothing about agents changed since the last call."""
        key = f"t:{token}" if token is not None else f"n:{name}"
        known = self._identity.agents.get(key)
        epoch, nudged = self._store.agents.epoch_and_nudge(known.name if known else None)
        entries = self._identity.at(epoch)
        agent = entries.get(key)
        if agent is None:
            agent = self.authenticate(token) if token is not None else self.agent(str(name))
            entries[key] = agent  # read after the epoch was: at worst newer than it, never older
            if known is None or known.name != agent.name:
                nudged = agent.name != OPERATOR and self._store.messages.has_pending_nudge(agent.name)
        return Caller(agent, nudged)

    def authenticate(self, token: str) -> Agent:
        """The agent an MCP bearer token belongs to; unknown or revoked tokens are refused."""
        agent = self._store.agents.by_token(token) if token else None
        if agent is None:
            raise Unauthorized("unknown or revoked token; get a new one with `gastown agent token NAME`")
        return agent

    def gateway_agent(self, key: str) -> Agent:
        """The agent a virtual gateway key belongs to; unknown or revoked keys are refused."""
        agent = self._store.agents.by_gateway_key(key) if key else None
        if agent is None:
            raise Unauthorized("unknown or revoked gateway key; `gastown agent token NAME` issues a new one")
        return agent

    def agent(self, name: str) -> Agent:
        if name == OPERATOR:
            return operator()
        agent = self._store.agents.get(name)
        if agent.state is AgentState.removed:
            raise NotFound(f"agent {name!r} was removed; add it again with `gastown agent add`")
        return agent

    # -- the table ---------------------------------------------------------------------------------
    def agents(self, actor: Agent, role: str | None = None) -> list[Agent]:
        self._require(actor, "town.agents", "list agents")
        return self._store.agents.all(role=guard.choice(Role, role, "role") if role else None)

    def alive_agents(self, actor: Agent) -> list[Agent]:
        """Agents whose process runs or is starting (see `AgentState.alive`)."""
        self._require(actor, "town.agents", "list agents")
        return self._store.agents.live()

    def resumable_agents(self, actor: Agent) -> list[Agent]:
        """Exited agents with a nudge waiting: the witness may resume their sessions with it."""
        self._require(actor, "town.agents", "list agents")
        return self._store.agents.resumable()

    def set_agent_state(self, actor: Agent, name: str, state: AgentState, reason: str = "", **meta: object) -> Agent:
        self._require(actor, "town.agents", "change agent states")
        return self._store.agents.set_state(actor.name, name, state, reason, **meta)

    def agent_exited(self, actor: Agent, name: str, reason: str, exit_code: int | None = None) -> Agent:
        """An agent's container is gone: record why, and its token and gateway key stop working at once."""
        self._require(actor, "town.agents", "change agent states")
        self._store.agents.revoke(actor.name, name)
        return self._store.agents.set_state(
            actor.name, name, AgentState.exited, reason, exit_reason=reason, exit_code=exit_code
        )

    def agent_add(self, actor: Agent, name: str, role: str, rig: str | None = None) -> Credentials:
        self._require(actor, "town.admin", "add agents")
        return self._store.agents.create(actor.name, guard.agent_name(name), guard.choice(Role, role, "role"), rig)

    def agent_remove(self, actor: Agent, name: str, reason: str = "") -> Agent:
        self._require(actor, "town.admin", "remove agents")
        self.agent(name)
        for bead in self._store.beads.held_by(name):
            self._store.beads.release(actor.name, bead.id, f"agent {name} removed", None)
        return self._store.agents.set_state(actor.name, name, AgentState.removed, reason)

    def agent_token(self, actor: Agent, name: str) -> Credentials:
        self._require(actor, "town.admin", "issue tokens")
        self.agent(name)
        return self._store.agents.rotate(actor.name, name)

    # -- liveness and overview ---------------------------------------------------------------------
    def heartbeat(self, actor: Agent) -> Heartbeat:
        self._require(actor, "town.heartbeat", "send heartbeats")
        self._store.agents.touch(actor.name, self.settings.lease.seconds)
        held = self._store.beads.held_by(actor.name)
        lease = self._store.beads.get(held[0].id).lease_expires_at if held else None
        pending = self._store.messages.pending_count(actor.name)
        return Heartbeat(agent=actor.name, holding=held, lease_expires_at=lease, pending_nudges=pending)

    def status(self, actor: Agent) -> TownStatus:
        self._require(actor, "town.status", "see the town status")
        counts = glance.status_counts(self._store.db)  # the CLI's quick `status` reads the same (town/glance.py)
        return TownStatus(town=self.settings.town.name, prefix=self.settings.town.prefix, **counts)
