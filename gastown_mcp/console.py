"""Rich renderings of the domain models for people at a terminal (the CLI; later the dashboard's text mode).

Each function takes models and returns a renderable; nothing here touches the town or the store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gastown_mcp.models import Agent, Bead, Event, Message

STATUS_STYLE = {
    "open": "cyan",
    "in_progress": "yellow",
    "blocked": "red",
    "done": "green",
    "cancelled": "dim",
}
# How a dependency reads from each end: (from the bead that has it, from the bead it points at).
DEP_NAMES = {
    "blocks": ("needs", "needed by"),
    "parent": ("parent", "child"),
    "related": ("related", "related"),
    "discovered_from": ("found while on", "led to"),
}
STATE_STYLE = {"sent": "yellow", "delivered": "cyan", "acknowledged": "green"}


def _status(value: str) -> Text:
    return Text(value, style=STATUS_STYLE.get(value, ""))


def _time(at: str | None) -> str:
    """ISO timestamps trimmed to the second: `2026-01-02 03:04:05`."""
    return at[:19].replace("T", " ") if at else ""


def bead_detail(bead: Bead) -> RenderableType:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    fields.add_row("status", _status(bead.status.value))
    fields.add_row("type", bead.type.value)
    fields.add_row("priority", str(bead.priority))
    if bead.labels:
        fields.add_row("labels", ", ".join(bead.labels))
    if bead.assignee:
        lease = f" (lease until {_time(bead.lease_expires_at)})" if bead.lease_expires_at else ""
        fields.add_row("assignee", bead.assignee + lease)
    if bead.attempts:
        fields.add_row("attempts", str(bead.attempts))
    if bead.blocked_by:
        fields.add_row("blocked by", ", ".join(bead.blocked_by))
    for dep in bead.deps:
        outgoing = dep.bead_id == bead.id
        names = DEP_NAMES.get(dep.kind.value, (dep.kind.value, dep.kind.value))
        fields.add_row(names[0] if outgoing else names[1], dep.depends_on if outgoing else dep.bead_id)
    fields.add_row("created", f"{_time(bead.created_at)} by {bead.created_by}")
    fields.add_row("updated", _time(bead.updated_at))
    if bead.closed_at:
        fields.add_row("closed", _time(bead.closed_at))
    parts: list[RenderableType] = [fields]
    for name, text in (("description", bead.description), ("acceptance", bead.acceptance), ("notes", bead.notes)):
        if text:
            parts += [Text(""), Text(name, style="bold"), Text(text)]
    if bead.result is not None:
        parts += [Text(""), Text("result", style="bold"), Text(bead.result.summary)]
        extra = [f"{k} {v}" for k, v in (("branch", bead.result.branch), ("commit", bead.result.commit)) if v]
        if extra:
            parts.append(Text(" · ".join(extra), style="dim"))
    if bead.comments:
        parts += [Text(""), Text("comments", style="bold")]
        for c in bead.comments:
            parts.append(Text.assemble((f"{_time(c.created_at)} {c.author}: ", "dim"), c.body))
    return Panel(Group(*parts), title=f"[bold]{bead.id}[/] {bead.title}", title_align="left")


def agent_table(agents: Sequence[Agent]) -> RenderableType:
    if not agents:
        return Text("no agents", style="dim")
    table = Table(show_edge=False, header_style="bold")
    for col in ("name", "role", "rig", "state", "last seen"):
        table.add_column(col, no_wrap=True)
    for a in agents:
        table.add_row(a.name, a.role.value, a.rig or "", a.state.value, _time(a.last_seen))
    return table


def event_line(event: Event) -> Text:
    """One event as one line, for the live feed."""
    detail = json.dumps(event.after, sort_keys=True) if event.after else ""
    return Text.assemble(
        (f"{event.id:>6} ", "dim"),
        (_time(event.at) + " ", "dim"),
        (event.actor, "bold"),
        " ",
        (event.verb, "cyan"),
        (f" {event.bead_id}" if event.bead_id else "", "yellow"),
        (f" @{event.agent}" if event.agent else "", "magenta"),
        (f" {detail}" if detail else "", "dim"),
    )


def message_table(messages: Sequence[Message], *, nudges: bool = False) -> RenderableType:
    if not messages:
        return Text("no nudges" if nudges else "no messages", style="dim")
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "sent", "from", "to", "state"):
        table.add_column(col, no_wrap=True)
    if not nudges:
        table.add_column("subject")
    table.add_column("text" if nudges else "body")
    for m in messages:
        row: list[RenderableType] = [
            str(m.id),
            _time(m.created_at),
            m.sender,
            m.recipient,
            Text(m.state.value, style=STATE_STYLE.get(m.state.value, "")),
        ]
        if not nudges:
            row.append(m.subject)
        row.append(m.body)
        table.add_row(*row)
    return table
