"""Value types shared by every layer: beads, agents, messages, events, and their enums.

These are plain pydantic models; the store builds them from rows, the town returns them, the server and CLI
serialise them. Nothing here talks to a database or the network.
"""

from __future__ import annotations

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
    requested = "requested"
    starting = "starting"
    running = "running"
    idle = "idle"
    nudged = "nudged"
    stalled = "stalled"
    exited = "exited"
    removed = "removed"


class MessageKind(StrEnum):
    mail = "mail"
    nudge = "nudge"


class MessageState(StrEnum):
    sent = "sent"
    delivered = "delivered"
    acknowledged = "acknowledged"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BeadResult(_Model):
    summary: str = Field(max_length=TEXT_MAX)
    branch: str | None = Field(default=None, max_length=300)
    commit: str | None = Field(default=None, max_length=100)


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


class Event(_Model):
    id: int
    at: str
    actor: str
    verb: str
    bead_id: str | None = None
    agent: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class TownStatus(_Model):
    town: str
    prefix: str
    beads_by_status: dict[str, int]
    ready: int
    agents_by_role: dict[str, int]
    agents_active: int
    pending_nudges: int
