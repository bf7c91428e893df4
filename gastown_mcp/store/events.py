"""The audit trail: reading events back, following them live, and exporting the town as JSONL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import IO, Any

from gastown_mcp.errors import StoreError
from gastown_mcp.models import Event, Verb
from gastown_mcp.store import rows
from gastown_mcp.store.db import Database, restore_hint

EXPORT_TABLES = ("beads", "labels", "deps", "comments", "events")
JSON_COLUMNS = {"metadata", "result", "before", "after"}


class EventRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def since(
        self, *, after_id: int = 0, bead_id: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[Event]:
        sql = "SELECT * FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if bead_id:
            sql += " AND bead_id=?"
            params.append(bead_id)
        if agent:
            sql += " AND agent=?"
            params.append(agent)
        return [rows.event(r) for r in self.db.query(sql + " ORDER BY id LIMIT ?", (*params, limit))]

    def record(self, actor: str, verb: Verb, after: dict[str, Any]) -> None:
        """An event on its own, about the town rather than one bead (what a dog cleaned up)."""
        with self.db.write() as tx:
            tx.event(actor, verb, after=after)

    def last_id(self) -> int:
        row = self.db.query_one("SELECT coalesce(max(id), 0) AS n FROM events")
        return int(row["n"]) if row else 0

    def tail(self, limit: int) -> list[Event]:
        found = self.db.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [rows.event(r) for r in reversed(found)]

    def export(self, out: IO[str]) -> dict[str, int]:
        """Write every bead, label, dependency, comment and event as one JSON object a line."""
        counts: dict[str, int] = {}
        try:
            for table in EXPORT_TABLES:
                n = 0
                for record in self._rows(table):
                    out.write(json.dumps({"table": table, **record}, sort_keys=True) + "\n")
                    n += 1
                counts[table] = n
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"export stopped: the town database is damaged ({exc}); run {restore_hint(self.db.path)}"
            ) from exc
        return counts

    def _rows(self, table: str) -> Iterator[dict[str, Any]]:
        cur = self.db.conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
        for row in cur:
            record = {k: row[k] for k in row.keys()}  # noqa: SIM118
            for key in JSON_COLUMNS & record.keys():
                record[key] = rows.loads(record[key])
            yield record
