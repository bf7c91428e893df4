"""The one domain API: every surface (MCP server, CLI, gateway, supervisor) calls `Town`.

Each method takes the acting `Agent` first, checks the role's permission, validates input, and calls the
store. Any call by an agent renews the leases it holds, so a working agent never loses its bead.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from gastown_mcp import roles
from gastown_mcp.budget import AgentUsage, Budgets, BudgetStatus
from gastown_mcp.config import Settings
from gastown_mcp.errors import Forbidden, GastownError, InvalidInput, NotFound, RuntimeUnavailable, Unauthorized
from gastown_mcp.models import (
    LABEL_MAX,
    TEXT_MAX,
    TITLE_MAX,
    Agent,
    AgentState,
    Bead,
    BeadResult,
    BeadStatus,
    BeadSummary,
    BeadType,
    Dep,
    DepKind,
    Message,
    MessageKind,
    Role,
    TownStatus,
)
from gastown_mcp.store import Credentials, Store

if TYPE_CHECKING:
    from gastown_mcp.fleet import Fleet
    from gastown_mcp.runtime.protocol import Limits
from gastown_mcp.store.db import now_iso

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
OPERATOR = "operator"


class Heartbeat(BaseModel):
    agent: str
    holding: list[BeadSummary]
    lease_expires_at: str | None
    pending_nudges: int


def operator() -> Agent:
    """The human at the CLI: acts with overseer rights, is not an agent row."""
    return Agent(name=OPERATOR, role=Role.overseer, state=AgentState.running, created_at=now_iso())


def system_agent(name: str, role: Role) -> Agent:
    """A deterministic supervisor (witness, dogs) acting in the town under its role; not an agent row."""
    return Agent(name=name, role=role, state=AgentState.running, created_at=now_iso())


def _text(name: str, value: str | None, limit: int = TEXT_MAX) -> str:
    value = value or ""
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value)} characters; the limit is {limit}. Shorten it")
    return value


class Town:
    def __init__(self, store: Store, settings: Settings, fleet: Fleet | None = None) -> None:
        self.store = store
        self.settings = settings
        self.fleet = fleet
        self._budgets: Budgets | None = None
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()

    # -- identity ----------------------------------------------------------------------------------
    def authenticate(self, token: str) -> Agent:
        agent = self.store.agents.by_token(token) if token else None
        if agent is None:
            raise Unauthorized("unknown or revoked token; get a new one with `gastown agent token NAME`")
        return agent

    def agent(self, name: str) -> Agent:
        if name == OPERATOR:
            return operator()
        agent = self.store.agents.get(name)
        if agent.state is AgentState.removed:
            raise NotFound(f"agent {name!r} was removed; add it again with `gastown agent add`")
        return agent

    def _require(self, actor: Agent, action: str, what: str) -> None:
        if not roles.can(actor.role, action):
            raise Forbidden(f"{actor.name} ({actor.role.value}) may not {what}")
        self._touch(actor)

    def _touch(self, actor: Agent) -> None:
        """Renew the caller's leases and last_seen, at most every few seconds per agent."""
        if actor.name == OPERATOR:
            return
        lease = self.settings.lease.seconds
        now = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(actor.name)
            if last is not None and now - last < min(5.0, lease / 20):
                return
            self._touched[actor.name] = now
        self.store.agents.touch(actor.name, lease)

    # -- beads -------------------------------------------------------------------------------------
    def bead_create(
        self,
        actor: Agent,
        title: str,
        *,
        description: str = "",
        acceptance: str = "",
        type: str = "task",
        priority: int = 2,
        labels: Sequence[str] = (),
        parent: str | None = None,
        blocked_by: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Bead:
        deps: list[tuple[str, str]] = [(DepKind.blocks.value, b) for b in blocked_by]
        if roles.can(actor.role, "bead.create"):
            pass
        elif roles.can(actor.role, "bead.create.discovered"):
            if parent is not None or blocked_by:
                raise Forbidden(f"{actor.name} may create side-work beads but not set parent or blockers")
            self._touch(actor)
            held = self.store.beads.held_by(actor.name)
            if held:
                deps.append((DepKind.discovered_from.value, held[0].id))
        else:
            raise Forbidden(f"{actor.name} ({actor.role.value}) may not create beads")
        self._touch(actor)
        return self.store.beads.create(
            actor.name,
            title=self._title(title),
            description=_text("description", description),
            acceptance=_text("acceptance", acceptance),
            type=self._enum(BeadType, type, "type").value,
            priority=self._priority(priority),
            labels=self._labels(labels),
            metadata=metadata,
            parent=parent,
            deps=deps,
        )

    def bead_show(self, actor: Agent, bead_id: str) -> Bead:
        self._require(actor, "bead.read", "read beads")
        return self.store.beads.get(bead_id)

    def bead_list(
        self,
        actor: Agent,
        *,
        status: Sequence[str] = (),
        assignee: str | None = None,
        label: str | None = None,
        type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[BeadSummary]:
        self._require(actor, "bead.read", "list beads")
        statuses = [self._enum(BeadStatus, s, "status").value for s in status]
        if type is not None:
            type = self._enum(BeadType, type, "type").value
        return self.store.beads.search(
            status=statuses,
            assignee=assignee,
            label=label,
            type=type,
            limit=self._limit(limit),
            offset=max(0, offset),
        )

    def bead_ready(self, actor: Agent, limit: int = 20) -> list[BeadSummary]:
        self._require(actor, "bead.read", "list ready beads")
        return self.store.beads.ready(limit=self._limit(limit))

    def bead_claim(self, actor: Agent, bead_id: str | None = None) -> Bead:
        self._require(actor, "bead.claim", "claim beads")
        return self.store.beads.claim(actor.name, bead_id or None, self.settings.lease.seconds)

    def bead_update(
        self,
        actor: Agent,
        bead_id: str,
        *,
        status: str | None = None,
        reason: str = "",
        title: str | None = None,
        description: str | None = None,
        acceptance: str | None = None,
        notes: str | None = None,
        type: str | None = None,
        priority: int | None = None,
        labels: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Bead:
        own = self._scope(actor, "bead.update", "update", bead_id)
        if own:
            others = {"title": title, "description": description, "acceptance": acceptance, "type": type}
            extra = [
                k
                for k, v in {**others, "priority": priority, "labels": labels, "metadata": metadata}.items()
                if v is not None
            ]
            if extra:
                raise Forbidden(
                    f"{actor.name} may change only notes and set status blocked on its bead, not {', '.join(extra)}"
                )
            if status is not None and status != BeadStatus.blocked.value:
                raise Forbidden(
                    f"{actor.name} may only set status 'blocked' (with a reason); use bead_complete "
                    "or bead_release for the rest"
                )
        fields: dict[str, Any] = {
            "title": self._title(title) if title is not None else None,
            "description": _text("description", description) if description is not None else None,
            "acceptance": _text("acceptance", acceptance) if acceptance is not None else None,
            "notes": _text("notes", notes) if notes is not None else None,
            "type": self._enum(BeadType, type, "type").value if type is not None else None,
            "priority": self._priority(priority) if priority is not None else None,
            "labels": self._labels(labels) if labels is not None else None,
            "metadata": metadata,
        }
        require = actor.name if own else None
        bead = None
        if any(v is not None for v in fields.values()):
            bead = self.store.beads.edit(actor.name, bead_id, fields, require)
        if status is not None:
            target = self._enum(BeadStatus, status, "status")
            bead = self.store.beads.transition(actor.name, bead_id, target, _text("reason", reason, 2000), require)
        if bead is None:
            raise InvalidInput("nothing to update: pass status or at least one field to change")
        return bead

    def bead_comment(self, actor: Agent, bead_id: str, body: str) -> int:
        self._require(actor, "bead.comment", "comment on beads")
        if not body.strip():
            raise InvalidInput("a comment needs a body")
        return self.store.beads.comment(actor.name, bead_id, _text("body", body))

    def bead_complete(
        self, actor: Agent, bead_id: str, summary: str, branch: str | None = None, commit: str | None = None
    ) -> Bead:
        own = self._scope(actor, "bead.complete", "complete", bead_id)
        if branch is None and actor.metadata.get("branch"):
            branch = str(actor.metadata["branch"])  # the agent's own worktree branch
        if not summary.strip():
            raise InvalidInput("completing a bead needs a summary of what was done")
        result = BeadResult(
            summary=_text("summary", summary),
            branch=_text("branch", branch, 300) or None,
            commit=_text("commit", commit, 100) or None,
        )
        return self.store.beads.complete(actor.name, bead_id, result, actor.name if own else None)

    def bead_release(self, actor: Agent, bead_id: str, reason: str = "") -> Bead:
        own = self._scope(actor, "bead.release", "release", bead_id)
        return self.store.beads.release(actor.name, bead_id, _text("reason", reason, 2000), actor.name if own else None)

    def bead_link(self, actor: Agent, bead_id: str, other: str, kind: str = "blocks") -> Dep:
        self._require(actor, "bead.link", "link beads")
        return self.store.beads.link(actor.name, bead_id, other, self._enum(DepKind, kind, "kind"))

    def _scope(self, actor: Agent, action: str, verb: str, bead_id: str) -> bool:
        """True when the caller may act only on its own beads (the store enforces it atomically)."""
        if roles.can(actor.role, f"{action}.any"):
            self._touch(actor)
            return False
        if roles.can(actor.role, f"{action}.own"):
            self._touch(actor)
            return True
        raise Forbidden(f"{actor.name} ({actor.role.value}) may not {verb} {bead_id}")

    # -- town --------------------------------------------------------------------------------------
    def status(self, actor: Agent) -> TownStatus:
        self._require(actor, "town.status", "see the town status")
        agents = self.store.agents.all()
        by_role: dict[str, int] = {}
        for a in agents:
            by_role[a.role.value] = by_role.get(a.role.value, 0) + 1
        active = {AgentState.starting, AgentState.running, AgentState.idle, AgentState.nudged}
        return TownStatus(
            town=self.settings.town.name,
            prefix=self.settings.town.prefix,
            beads_by_status=self.store.beads.counts(),
            ready=self.store.beads.ready_count(),
            agents_by_role=by_role,
            agents_active=sum(1 for a in agents if a.state in active),
            pending_nudges=self.store.messages.pending_count(),
        )

    def agents(self, actor: Agent, role: str | None = None) -> list[Agent]:
        self._require(actor, "town.agents", "list agents")
        return self.store.agents.all(role=self._enum(Role, role, "role") if role else None)

    def nudge(self, actor: Agent, to: str, text: str) -> Message:
        self._require(actor, "town.nudge", "nudge agents")
        self._recipient(to)
        if not text.strip():
            raise InvalidInput("a nudge needs text saying what the agent should do")
        return self.store.messages.send(actor.name, to, MessageKind.nudge, _text("text", text, 4000))

    def mail_send(self, actor: Agent, to: str, subject: str, body: str, thread: str | None = None) -> Message:
        self._require(actor, "town.mail", "send mail")
        self._recipient(to)
        if not body.strip():
            raise InvalidInput("mail needs a body")
        return self.store.messages.send(
            actor.name, to, MessageKind.mail, _text("body", body), _text("subject", subject, 200), thread
        )

    def inbox(self, actor: Agent, unread_only: bool = True, limit: int = 20) -> list[Message]:
        self._require(actor, "town.inbox", "read an inbox")
        return self.store.messages.inbox(actor.name, unread_only=unread_only, limit=self._limit(limit))

    def acknowledge(self, actor: Agent, ids: Sequence[int]) -> int:
        self._require(actor, "town.inbox", "acknowledge messages")
        return self.store.messages.acknowledge(actor.name, list(ids))

    def heartbeat(self, actor: Agent) -> Heartbeat:
        self._require(actor, "town.heartbeat", "send heartbeats")
        self.store.agents.touch(actor.name, self.settings.lease.seconds)
        held = self.store.beads.held_by(actor.name)
        lease = self.store.beads.get(held[0].id).lease_expires_at if held else None
        pending = self.store.messages.pending_count(actor.name)
        return Heartbeat(agent=actor.name, holding=held, lease_expires_at=lease, pending_nudges=pending)

    def take_nudges(self, actor: Agent) -> list[Message]:
        """Pending nudges for the caller, marked delivered (they ride on its next tool result)."""
        if actor.name == OPERATOR or not self.store.messages.has_pending_nudge(actor.name):
            return []
        return self.store.messages.deliver_nudges(actor.name)

    def _recipient(self, name: str) -> None:
        if name == OPERATOR:
            return
        found = self.store.agents.find(name)
        if found is None or found.state is AgentState.removed:
            raise NotFound(f"no agent {name!r} to send to; see town_agents for names")

    # -- supervision (witness) ---------------------------------------------------------------------
    def requeue(self, actor: Agent, bead_id: str, reason: str) -> Bead:
        """Take a bead back from a dead or silent holder; after `max_attempts` failures it is blocked."""
        self._require(actor, "bead.release.any", "requeue beads")
        return self.store.beads.release(
            actor.name, bead_id, _text("reason", reason, 2000), None, block_after=self.settings.witness.max_attempts
        )

    def block(self, actor: Agent, bead_id: str, reason: str) -> Bead:
        self._require(actor, "bead.release.any", "block beads")
        return self.store.beads.transition(actor.name, bead_id, BeadStatus.blocked, reason, None)

    def set_agent_state(self, actor: Agent, name: str, state: AgentState, reason: str = "", **meta: Any) -> Agent:
        self._require(actor, "town.agents", "change agent states")
        return self.store.agents.set_state(actor.name, name, state, reason, **meta)

    def escalate(self, actor: Agent, subject: str, body: str) -> Message:
        """Mail the mayor (or the operator when the town has no mayor)."""
        mayors = self.store.agents.all(role=Role.mayor)
        to = mayors[0].name if mayors else OPERATOR
        return self.store.messages.send(actor.name, to, MessageKind.mail, body, subject[:200])

    # -- the fleet (mayor and overseer) ---------------------------------------------------------------
    def _fleet(self) -> Fleet:
        if self.fleet is None:
            raise RuntimeUnavailable(
                "this town has no container runtime attached: start it with `gastown up` to spawn agents"
            )
        return self.fleet

    def spawn(
        self,
        actor: Agent,
        role: str,
        *,
        rig: str | None = None,
        bead: str | None = None,
        command: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> Agent:
        self._require(actor, "town.spawn", "spawn agents")
        fleet = self._fleet()
        with self._mail_if_blocked(actor, bead):
            return fleet.spawn(
                actor.name,
                self._enum(Role, role, "role"),
                rig=rig,
                bead=bead,
                command=command,
                limits=limits,
                lease_seconds=self.settings.lease.seconds,
                max_attempts=self.settings.witness.max_attempts,
            )

    def stop(self, actor: Agent, name: str, reason: str = "") -> Agent:
        self._require(actor, "town.stop", "stop agents")
        self.agent(name)
        return self._fleet().stop(actor.name, name, _text("reason", reason, 2000))

    def sling(self, actor: Agent, bead_id: str, target: str) -> Agent:
        self._require(actor, "town.sling", "sling beads")
        fleet = self._fleet()
        with self._mail_if_blocked(actor, bead_id):
            return fleet.sling(
                actor.name, bead_id, target, self.settings.lease.seconds, self.settings.witness.max_attempts
            )

    @contextlib.contextmanager
    def _mail_if_blocked(self, actor: Agent, bead_id: str | None) -> Iterator[None]:
        """A spawn whose failure blocked its bead (too many failed attempts) is news for the mayor."""
        before = None
        if bead_id:
            with contextlib.suppress(GastownError):  # a bad id is the spawn's own error to report
                before = self.store.beads.get(bead_id).status
        try:
            yield
        except GastownError as exc:
            if bead_id and before is not None and before is not BeadStatus.blocked:
                bead = self.store.beads.get(bead_id)
                if bead.status is BeadStatus.blocked:
                    cause = exc.__cause__ if isinstance(exc.__cause__, GastownError) else exc
                    self.escalate(
                        actor,
                        f"{bead_id} blocked: its polecat could not be started",
                        f"{bead_id} ({bead.title}) was blocked after {bead.attempts} failed attempts. The last "
                        f"failure: {cause}. Fix the cause, then unblock the bead (`bead_update status=open`).",
                    )
            raise

    def logs(self, actor: Agent, name: str, tail: int = 200) -> str:
        self._require(actor, "town.agents", "read agent logs")
        return self._fleet().logs(name, tail)

    # -- budgets and usage (the gateway meters; these read and set) ----------------------------------
    @property
    def budgets(self) -> Budgets:
        if self._budgets is None:
            from gastown_mcp.budget import Budgets, Price, PriceTable

            prices = {k: Price(**v) for k, v in (getattr(self.settings.gateway, "prices", None) or {}).items()}
            self._budgets = Budgets(self.store, PriceTable(prices))
        return self._budgets

    def budget_set(
        self, actor: Agent, scope: str, name: str | None = None, *, tokens: int | None = None, usd: float | None = None
    ) -> BudgetStatus:
        self._require(actor, "town.budget.set", "set budgets")
        if scope == "agent" and name:
            self.agent(name)
        return self.budgets.set(actor.name, scope, name, tokens=tokens, usd=usd)

    def budget_clear(self, actor: Agent, scope: str, name: str | None = None) -> None:
        self._require(actor, "town.budget.set", "clear budgets")
        self.budgets.clear(actor.name, scope, name)

    def budget(self, actor: Agent, scope: str | None = None, name: str | None = None) -> list[BudgetStatus]:
        self._require(actor, "town.budget", "read budgets")
        return self.budgets.show(scope, name)

    def usage(self, actor: Agent, agent: str | None = None) -> list[AgentUsage]:
        self._require(actor, "town.usage", "read usage")
        return self.budgets.usage(agent)

    # -- agents (operator and overseer) ------------------------------------------------------------
    def agent_add(self, actor: Agent, name: str, role: str, rig: str | None = None) -> Credentials:
        self._require(actor, "town.admin", "add agents")
        if not NAME_RE.match(name) or name == OPERATOR:
            raise InvalidInput(
                f"agent name {name!r} is not allowed: use 1-40 lowercase letters, digits or '-', starting with a letter"
            )
        return self.store.agents.create(actor.name, name, self._enum(Role, role, "role"), rig)

    def agent_remove(self, actor: Agent, name: str, reason: str = "") -> Agent:
        self._require(actor, "town.admin", "remove agents")
        self.agent(name)
        for bead in self.store.beads.held_by(name):
            self.store.beads.release(actor.name, bead.id, f"agent {name} removed", None)
        return self.store.agents.set_state(actor.name, name, AgentState.removed, reason)

    def agent_token(self, actor: Agent, name: str) -> Credentials:
        self._require(actor, "town.admin", "issue tokens")
        self.agent(name)
        return self.store.agents.rotate(actor.name, name)

    # -- validation --------------------------------------------------------------------------------
    @staticmethod
    def _title(title: str) -> str:
        title = (title or "").strip()
        if not title:
            raise InvalidInput("a bead needs a title: one line saying what to do")
        return _text("title", title, TITLE_MAX)

    @staticmethod
    def _priority(priority: int) -> int:
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 4:
            raise InvalidInput(f"priority must be an integer from 0 (highest) to 4 (lowest), not {priority!r}")
        return priority

    @staticmethod
    def _labels(labels: Sequence[str]) -> list[str]:
        out = []
        for label in labels:
            if not isinstance(label, str) or not LABEL_RE.match(label) or len(label) > LABEL_MAX:
                raise InvalidInput(f"label {label!r} is not allowed: use up to {LABEL_MAX} letters, digits and _.:/-")
            out.append(label)
        if len(out) > 32:
            raise InvalidInput("at most 32 labels per bead")
        return out

    @staticmethod
    def _limit(limit: int) -> int:
        if not 1 <= limit <= 500:
            raise InvalidInput(f"limit must be between 1 and 500, not {limit}")
        return limit

    @staticmethod
    def _enum(enum: Any, value: str, what: str) -> Any:
        try:
            return enum(value)
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise InvalidInput(f"{what} {value!r} is not one of: {choices}") from None
