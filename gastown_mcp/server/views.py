"""What tools take and return: tool annotations and the pydantic views models read.

Views are flat and slim on purpose: every role's tool schemas are sent to the model on every turn.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from gastown_mcp.models import Agent, Bead, BeadBrief, BeadSummary, Message
from gastown_mcp.town.budgets import AgentUsage, BudgetStatus

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
IDEMPOTENT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)

BeadId = Annotated[str, Field(max_length=200, description="bead id, e.g. gt-4f2a")]

_NESTED = ("items", "additionalProperties", "not")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def slim_schema(node: Any, *, inputs: bool) -> Any:
    """A tool schema without what costs the model tokens and tells it nothing: pydantic's `title` keys (a
    title-cased copy of each name), and - in input schemas - the `null` branch of optional arguments and
    defaults that mean "nothing" (null, "", []): leaving an argument out is how to say that, and the server
    still accepts them. Output schemas keep their `null` branches: clients validate results against them."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _MAPS and isinstance(value, dict):
            out[key] = {name: slim_schema(sub, inputs=inputs) for name, sub in value.items()}
        elif key in _LISTS and isinstance(value, list):
            out[key] = [slim_schema(sub, inputs=inputs) for sub in value]
        elif key in _NESTED:
            out[key] = slim_schema(value, inputs=inputs)
        else:
            out[key] = value
    if inputs:
        branches = out.get("anyOf")
        if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
            (kept,) = [b for b in branches if b != {"type": "null"}]
            del out["anyOf"]
            out = {**kept, **out}
        if "default" in out and out["default"] in (None, "", []):
            del out["default"]
    return out


def slim_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`tools/list` entries with slim input and output schemas (see `slim_schema`)."""
    out = []
    for tool in tools:
        tool = dict(tool)
        if "inputSchema" in tool:
            tool["inputSchema"] = slim_schema(tool["inputSchema"], inputs=True)
        if "outputSchema" in tool:
            tool["outputSchema"] = slim_schema(tool["outputSchema"], inputs=False)
        out.append(tool)
    return out


class Row(BaseModel):
    """A slim bead row: what list tools return."""

    id: str
    title: str
    status: str
    priority: int
    assignee: str | None = None


class BeadList(BaseModel):
    beads: list[Row]
    hint: str = "bead_show ID for details"

    @classmethod
    def of(cls, beads: list[BeadSummary]) -> BeadList:
        return cls(beads=[Row(**b.model_dump(mode="json")) for b in beads])


class BeadView(BaseModel):
    """A bead as the model reads it: flat strings instead of nested objects, to keep schemas small."""

    id: str
    title: str
    status: str
    priority: int
    type: str
    description: str = ""
    acceptance: str = ""
    notes: str = ""
    labels: list[str] = []
    assignee: str | None = None
    lease_expires_at: str | None = None
    attempts: int = 0
    blocked_by: list[str] = []
    links: list[str] = []
    comments: list[str] = []
    result: dict[str, str | None] | None = None
    created_by: str

    @classmethod
    def of(cls, bead: Bead) -> BeadView:
        return cls(
            **bead.model_dump(
                mode="json",
                include={
                    "id",
                    "title",
                    "status",
                    "priority",
                    "type",
                    "description",
                    "acceptance",
                    "notes",
                    "labels",
                    "assignee",
                    "lease_expires_at",
                    "attempts",
                    "blocked_by",
                    "result",
                    "created_by",
                },
            ),
            links=[f"{d.bead_id} {d.kind.value} {d.depends_on}" for d in bead.deps],
            comments=[f"{c.author}: {c.body}" for c in bead.comments],
        )


class BeadChange(BaseModel):
    """What a write did: the bead's new state in brief (bead_show for the rest)."""

    id: str
    title: str
    status: str
    assignee: str | None = None
    lease_expires_at: str | None = None
    attempts: int = 0

    @classmethod
    def of(cls, bead: Bead | BeadBrief) -> BeadChange:
        return cls.model_validate(change_of(bead))


# What the write tools return: the bead once, as structured content (all Claude Code gives its model), and a
# one-line text for clients that read text only - not a second, JSON copy of the same bead.
BeadChangeResult = Annotated[CallToolResult, BeadChange]


def change_of(bead: Bead | BeadBrief) -> dict[str, Any]:
    """`BeadChange`'s fields straight from the bead (no model built in between)."""
    return {
        "id": bead.id,
        "title": bead.title,
        "status": bead.status.value,
        "assignee": bead.assignee,
        "lease_expires_at": bead.lease_expires_at,
        "attempts": bead.attempts,
    }


def change_line(data: dict[str, Any]) -> str:
    """The one-line text of a write tool's result (`data`: `change_of`)."""
    line = f"{data['id']} is {data['status']}"
    if data["assignee"]:
        line += f", assignee {data['assignee']}"
    if data["lease_expires_at"]:
        line += f", lease until {data['lease_expires_at'][11:19]} UTC"
    return f"{line}: {data['title']}"


def changed(bead: Bead | BeadBrief) -> CallToolResult:
    """A write tool's result: structured `BeadChange` plus a one-line summary as its text."""
    data = change_of(bead)
    return CallToolResult(content=[TextContent(type="text", text=change_line(data))], structured_content=data)


class Commented(BaseModel):
    bead_id: str
    comment_id: int


class AgentList(BaseModel):
    agents: list[Agent]


class Inbox(BaseModel):
    messages: list[Message]


class Sent(BaseModel):
    message_id: int
    to: str
    state: str


class LimitsIn(BaseModel):
    """Resource ceilings for a spawned container; omitted fields take the role's defaults."""

    memory_mb: int | None = Field(default=None, ge=64, le=65536)
    cpus: float | None = Field(default=None, gt=0, le=64)
    pids: int | None = Field(default=None, ge=16, le=65536)
    wallclock_s: int | None = Field(default=None, ge=10, le=7 * 86400)


class Budgets(BaseModel):
    budgets: list[BudgetStatus]


class UsageReport(BaseModel):
    agents: list[AgentUsage]
