"""Row ↔ model conversion shared by the store's repositories."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from gastown_mcp.models import Agent, BeadSummary, Comment, Event, Message


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def summary(row: sqlite3.Row) -> BeadSummary:
    return BeadSummary(
        id=row["id"],
        title=row["title"],
        status=row["status"],
        priority=row["priority"],
        assignee=row["assignee"],
    )


def agent(row: sqlite3.Row) -> Agent:
    return Agent(
        name=row["name"],
        role=row["role"],
        rig=row["rig"],
        state=row["state"],
        created_at=row["created_at"],
        last_seen=row["last_seen"],
        metadata=loads(row["metadata"]) or {},
    )


def comment(row: sqlite3.Row) -> Comment:
    return Comment(
        id=row["id"],
        bead_id=row["bead_id"],
        author=row["author"],
        body=row["body"],
        created_at=row["created_at"],
    )


def message(row: sqlite3.Row) -> Message:
    return Message(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row is not a mapping


def event(row: sqlite3.Row) -> Event:
    data = {k: row[k] for k in row.keys()}  # noqa: SIM118
    data["before"] = loads(data["before"])
    data["after"] = loads(data["after"])
    return Event(**data)
