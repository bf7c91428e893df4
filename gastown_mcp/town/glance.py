"""The narrow door for the CLI's quickest reads: `bead ready` and `status`, on the standard library alone (no
pydantic), as plain JSON-ready dicts equal to the full API's models dumped as JSON.

It opens the database exactly as `Town` does (`Database` with `must_exist` and `check`: migrations, journal
roll-forward, quick check) and reads through the same store queries (`store/glance.py`, `UsageRepo`). The
shaping of budgets, usage and model errors lives here and `town/budgets.py` builds its models from it, so the
two paths cannot drift. The operator has overseer rights and no agent row. A call made as an agent is what
`Town` makes of it: the agent looked up (`caller`), its role checked in the roles table, and its leases renewed
before the read (`renew`), the one write here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gastown_mcp.clock import now_iso
from gastown_mcp.store import glance as reads
from gastown_mcp.store.db import Database
from gastown_mcp.store.usage import TOWN, UsageRepo

__all__ = ["Glance", "budget_fields", "failing_fields", "spend_fields", "usage_fields"]


class Glance:
    """One town's database, opened for the quick path's reads (and an agent's lease renewal)."""

    def __init__(self, name: str, prefix: str, db_path: Path, journal_path: Path, *, durable: bool = True) -> None:
        self.name, self.prefix = name, prefix
        self.db = Database(db_path, journal_path, fsync=durable, must_exist=True, check=True)
        self.usage = UsageRepo(self.db)

    def close(self) -> None:
        self.db.close()

    def caller(self, name: str) -> str | None:
        """The role of agent `name`, or None when `Town.agent(name)` would refuse it (unknown or removed)."""
        row = reads.agent_row(self.db, name)
        return None if row is None or row["state"] == "removed" else str(row["role"])

    def renew(self, name: str, lease_seconds: float) -> None:
        """What any call by an agent does first (`TownBase._touch`): renew its leases and last_seen."""
        reads.touch(self.db, name, lease_seconds)

    def ready(self, limit: int) -> list[dict[str, Any]]:
        """`Town.bead_ready(operator(), limit)` dumped as JSON (`limit` already checked: 1-500)."""
        return [summary(r) for r in reads.ready_rows(self.db, limit=limit, now=now_iso())]

    def status(self, *, budgets: bool = True, usage: bool = True) -> dict[str, Any]:
        """What `gastown status --json` prints: the town status, and the budgets, usage and model errors when
        the caller may read them (`town.budget`, `town.usage`; the operator may)."""
        out: dict[str, Any] = {"town": self.name, "prefix": self.prefix, **reads.status_counts(self.db)}
        out["budgets"] = [self._budget(r) for r in self.usage.list_budgets()] if budgets else []
        out["usage"] = [self._usage(r) for r in self.usage.totals_by_agent()] if usage else []
        out["model_errors"] = [failing_fields(r) for r in self.usage.failing()] if usage else []
        return out

    def _usage(self, row: sqlite3.Row) -> dict[str, Any]:
        applying = self.usage.budgets(self.db.conn, keys_for(row["agent"], row["rig"]))
        return usage_fields(row, [self._budget(b) for b in applying])

    def _budget(self, row: sqlite3.Row) -> dict[str, Any]:
        return budget_fields(row, self.usage.reserved_so_far(self.db.conn, row["scope"], row["name"]))


def summary(row: sqlite3.Row) -> dict[str, Any]:
    """A `BeadSummary` as JSON."""
    return {k: row[k] for k in ("id", "title", "status", "priority", "assignee")}


def keys_for(agent: str, rig: str | None) -> list[tuple[str, str]]:
    """The budgets an agent spends from, in order: its own, its rig's, the town's."""
    keys = [("agent", agent)]
    if rig:
        keys.append(("rig", rig))
    keys.append(("town", TOWN))
    return keys


def budget_fields(row: sqlite3.Row, reserved: tuple[int, float] = (0, 0.0)) -> dict[str, Any]:
    """A budget row and what requests in flight reserve against it: the fields of `BudgetStatus`, in order."""
    tl, ul = row["token_limit"], row["usd_limit"]
    trem = None if tl is None else max(tl - row["tokens_spent"], 0)
    urem = None if ul is None else max(ul - row["usd_spent"], 0.0)
    return {
        "scope": row["scope"],
        "name": row["name"],
        "token_limit": tl,
        "usd_limit": ul,
        "tokens_spent": row["tokens_spent"],
        "usd_spent": round(row["usd_spent"], 9),
        "tokens_remaining": trem,
        "usd_remaining": None if urem is None else round(urem, 9),
        "exhausted": (trem is not None and trem <= 0) or (urem is not None and urem <= 0),
        "exhausted_at": row["exhausted_at"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
        "reserved_tokens": reserved[0],
        "reserved_usd": round(reserved[1], 9),
    }


def spend_fields(row: sqlite3.Row) -> dict[str, Any]:
    """The spend totals of a grouped usage row (requests, refused, tokens by kind, USD, last request), with
    SUM()'s NULLs as zeros: what `AgentUsage` and `UsageLine` share."""
    return {
        "requests": row["requests"],
        "refused": row["refused"] or 0,
        "input_tokens": row["input_tokens"] or 0,
        "output_tokens": row["output_tokens"] or 0,
        "cache_creation_tokens": row["cache_creation_tokens"] or 0,
        "cache_read_tokens": row["cache_read_tokens"] or 0,
        "cost_usd": round(row["cost_usd"] or 0.0, 9),
        "last_at": row["last_at"],
    }


def usage_fields(row: sqlite3.Row, applying: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An agent's usage totals and the least remaining over the budgets `applying` to it (`budget_fields`
    dicts): the fields of `AgentUsage`, in order."""
    spend = spend_fields(row)
    trems = [b["tokens_remaining"] for b in applying if b["tokens_remaining"] is not None]
    urems = [b["usd_remaining"] for b in applying if b["usd_remaining"] is not None]
    return {
        "agent": row["agent"],
        "rig": row["rig"],
        **{k: v for k, v in spend.items() if k != "last_at"},
        "tokens_remaining": min(trems) if trems else None,
        "usd_remaining": min(urems) if urems else None,
        "last_at": spend["last_at"],
        "upstreams": sorted(set(row["upstreams"].split(","))) if row["upstreams"] else [],
    }


def failing_fields(row: sqlite3.Row) -> dict[str, Any]:
    """An agent whose latest model calls failed: the fields of `ModelError`, in order."""
    return {
        "agent": row["agent"],
        "failures": row["failures"],
        "first_id": row["first_id"],
        "status": row["status"],
        "upstream": row["upstream"],
        "model": row["model"],
        "error": row["error"] or f"HTTP {row['status']}",
        "at": row["at"],
    }
