"""Value types shared by every layer: beads, agents, messages, events, and their enums.

These are plain pydantic models; the store builds them from rows, the town returns them, the server and CLI
serialise them. Nothing here talks to a database or the network.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TITLE_MAX = 500
TEXT_MAX = 20_000
LABEL_MAX = 64


class BeadStatus(StrEnum):
    open = "open"
    in_progress = "in_progress"
    blocked = "blocked"
    done = "done"
    cancelled = "cancelled"


CLOSED_STATUSES = frozenset({BeadStatus.done, BeadStatus.cancelled})


class BeadType(StrEnum):
    task = "task"
    bug = "bug"
    feature = "feature"
    epic = "epic"
    chore = "chore"


class DepKind(StrEnum):
    blocks = "blocks"
    parent = "parent"
    related = "related"
    discovered_from = "discovered_from"


class Role(StrEnum):
    overseer = "overseer"
    mayor = "mayor"
    refinery = "refinery"
    deacon = "deacon"
    witness = "witness"
    polecat = "polecat"
    dog = "dog"


class AgentState(StrEnum):
    """An agent's lifecycle: requested -> starting -> running (idle -> nudged -> stalled) -> exited -> removed."""

    requested = "requested"
    starting = "starting"
    running = "running"
    idle = "idle"
    nudged = "nudged"
    stalled = "stalled"
    exited = "exited"
    removed = "removed"

    @property
    def alive(self) -> bool:
        """Its process runs (or is starting): the witness watches it and shutdown stops it."""
        return self in ALIVE_STATES

    @property
    def takes_work(self) -> bool:
        """A bead can be slung onto its hook."""
        return self in WORKING_STATES


# The one lifecycle table: which states count as alive, and which of those can take a bead.
ALIVE_STATES = frozenset(
    {AgentState.starting, AgentState.running, AgentState.idle, AgentState.nudged, AgentState.stalled}
)
WORKING_STATES = frozenset({AgentState.running, AgentState.idle, AgentState.nudged})


class Verb(StrEnum):
    """The event vocabulary (`noun.verb`): every event the store writes to the audit trail and journal."""

    bead_created = "bead.created"
    bead_claimed = "bead.claimed"
    bead_taken_over = "bead.taken_over"
    bead_updated = "bead.updated"
    bead_released = "bead.released"
    bead_blocked = "bead.blocked"
    bead_reopened = "bead.reopened"
    bead_completed = "bead.completed"
    bead_cancelled = "bead.cancelled"
    bead_linked = "bead.linked"
    bead_unlinked = "bead.unlinked"
    bead_commented = "bead.commented"
    bead_in_progress = "bead.in_progress"
    bead_done = "bead.done"
    agent_created = "agent.created"
    agent_token_rotated = "agent.token_rotated"
    agent_token_revoked = "agent.token_revoked"
    agent_stop_requested = "agent.stop_requested"
    agent_requested = "agent.requested"
    agent_starting = "agent.starting"
    agent_running = "agent.running"
    agent_idle = "agent.idle"
    agent_nudged = "agent.nudged"
    agent_stalled = "agent.stalled"
    agent_exited = "agent.exited"
    agent_removed = "agent.removed"
    mail_sent = "mail.sent"
    message_delivered = "message.delivered"
    message_acknowledged = "message.acknowledged"
    nudge_sent = "nudge.sent"
    nudge_delivered = "nudge.delivered"
    budget_set = "budget.set"
    budget_cleared = "budget.cleared"
    budget_exhausted = "budget.exhausted"
    route_set = "route.set"
    route_cleared = "route.cleared"
    bead_merged = "bead.merged"
    merge_queued = "merge.queued"
    merge_testing = "merge.testing"
    merge_merged = "merge.merged"
    merge_conflicted = "merge.conflicted"
    merge_failed = "merge.failed"
    merge_rejected = "merge.rejected"
    plan_created = "plan.created"
    convoy_landed = "convoy.landed"
    convoy_cancelled = "convoy.cancelled"
    verify_passed = "verify.passed"
    verify_failed = "verify.failed"
    review_verdict = "review.verdict"
    town_created = "town.created"
    town_estopped = "town.estopped"
    town_thawed = "town.thawed"
    dispatch_held = "dispatch.held"
    dispatch_resumed = "dispatch.resumed"
    orphans_pruned = "orphans.pruned"
    goal_added = "goal.added"
    goal_linked = "goal.linked"
    goal_achieved = "goal.achieved"
    goal_abandoned = "goal.abandoned"
    directive_issued = "directive.issued"
    directive_acknowledged = "directive.acknowledged"
    directive_done = "directive.done"
    directive_refused = "directive.refused"
    overseer_decided = "overseer.decided"
    overseer_escalated = "overseer.escalated"
    overseer_stopped = "overseer.stopped"

    @classmethod
    def of_agent_state(cls, state: AgentState) -> Verb:
        return cls(f"agent.{state.value}")

    @classmethod
    def of_bead_status(cls, status: BeadStatus) -> Verb:
        """A status change's event (back to open reads as `bead.reopened`)."""
        return cls.bead_reopened if status is BeadStatus.open else cls(f"bead.{status.value}")

    @classmethod
    def of_merge(cls, state: MergeState) -> Verb:
        return cls(f"merge.{state.value}")

    @classmethod
    def of_message(cls, kind: MessageKind) -> Verb:
        return cls(f"{kind.value}.sent")


_SECONDS: dict[int, str] = {}  # whole second -> its "%Y-%m-%dT%H:%M:%S" text: stamps come many to a second


def now_iso(at: float | None = None) -> str:
    """UTC timestamps as fixed-width ISO strings, so text order is time order. The same text as
    `datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")` (microseconds rounded half to even),
    with each second's text formatted once."""
    frac, whole = math.modf(time.time() if at is None else at)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second = int(whole)
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) >= 64:
            _SECONDS.clear()
        text = _SECONDS[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{micros:06d}Z"


class MergeState(StrEnum):
    """A merge request: queued -> testing -> merged | conflicted | failed | rejected."""

    queued = "queued"
    testing = "testing"
    merged = "merged"
    conflicted = "conflicted"
    failed = "failed"
    rejected = "rejected"


OPEN_MERGE_STATES = frozenset({MergeState.queued, MergeState.testing})


class MessageKind(StrEnum):
    mail = "mail"
    nudge = "nudge"


class MessageState(StrEnum):
    sent = "sent"
    delivered = "delivered"
    acknowledged = "acknowledged"


class StrictModel(BaseModel):
    """The one strict base: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


_Model = StrictModel


class BeadResult(_Model):
    summary: str = Field(max_length=TEXT_MAX)
    branch: str | None = Field(default=None, max_length=300)
    commit: str | None = Field(default=None, max_length=100)
    base: str | None = Field(default=None, max_length=100, description="where a handed-in branch forked from main")


class Dep(_Model):
    bead_id: str
    depends_on: str
    kind: DepKind


class Comment(_Model):
    id: int
    bead_id: str
    author: str
    body: str
    created_at: str


class BeadSummary(_Model):
    """The slim form list tools return; `bead_show` gives the rest."""

    id: str
    title: str
    status: BeadStatus
    priority: int
    assignee: str | None = None


class BeadBrief(BeadSummary):
    """A bead's state right after a write, read inside the write's transaction (no second read of the bead)."""

    lease_expires_at: str | None = None
    attempts: int = 0


class Bead(_Model):
    id: str
    title: str
    description: str = ""
    acceptance: str = ""
    notes: str = ""
    type: BeadType = BeadType.task
    priority: int = 2
    status: BeadStatus = BeadStatus.open
    labels: list[str] = Field(default_factory=list)
    assignee: str | None = None
    lease_expires_at: str | None = None
    attempts: int = 0
    result: BeadResult | None = None
    created_by: str
    created_at: str
    updated_at: str
    closed_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    awaiting_merge: bool = Field(default=False, description="done and handed in; its commit is not on main yet")
    blocked_by: list[str] = Field(default_factory=list, description="open beads that must finish first")
    deps: list[Dep] = Field(default_factory=list)
    comments: list[Comment] = Field(default_factory=list)

    def summary(self) -> BeadSummary:
        return BeadSummary(
            id=self.id, title=self.title, status=self.status, priority=self.priority, assignee=self.assignee
        )


class Agent(_Model):
    name: str
    role: Role
    rig: str | None = None
    state: AgentState = AgentState.requested
    created_at: str
    last_seen: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def launching(self) -> bool:
        """The town was asked to start it and its container is not up yet (not judged dead until it is)."""
        return self.state in (AgentState.requested, AgentState.starting) and self.metadata.get("desired") == "running"


class Message(_Model):
    id: int
    kind: MessageKind
    sender: str
    recipient: str
    subject: str = ""
    body: str
    thread: str | None = None
    state: MessageState
    created_at: str
    delivered_at: str | None = None
    acknowledged_at: str | None = None

    def nudge_line(self) -> str:
        """How a nudge reads wherever it reaches an agent: a tool result, or a resumed session's prompt."""
        return f"{NUDGE_MARK}{self.sender} (#{self.id}): {self.body}"


NUDGE_MARK = "NUDGE from "


class Event(_Model):
    id: int
    at: str
    actor: str
    verb: str
    bead_id: str | None = None
    agent: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class MergeRequest(_Model):
    """A handed-in branch on its way to `main`; `landed` is the commit on main that carries it."""

    id: int
    rig: str
    bead_id: str
    agent: str
    ref: str
    tip: str
    base: str
    state: MergeState
    attempts: int = 0
    landing: str | None = None
    landed: str | None = None
    detail: str = ""
    log_tail: str = ""
    gate_runs: int = 0
    created_at: str
    updated_at: str
    merged_at: str | None = None


class TownStatus(_Model):
    town: str
    prefix: str
    beads_by_status: dict[str, int]
    ready: int
    agents_by_role: dict[str, int]
    agents_active: int
    pending_nudges: int
    awaiting_merge: int = Field(default=0, description="beads done and handed in, not yet on main")
    merges_by_state: dict[str, int] = Field(default_factory=dict)
    estop: dict[str, Any] | None = Field(default=None, description="the emergency stop in force: who, why, when")
