"""SQL for the gateway: usage rows, budgets (limits with running totals), live reservations and routes.

Budget rows keep running `*_spent` totals and live reservations sit in their own small table, so admitting a
request is a few indexed reads in one `BEGIN IMMEDIATE`; `budget.py` owns the rules, this module the rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gastown_mcp.store.db import Database, Tx

BudgetKey = tuple[str, str]  # (scope, name): ("agent", "polecat-1"), ("rig", "web"), ("town", "town")

TOWN = "town"


@dataclass(frozen=True)
class UsageRow:
    """One metered request, as written to the `usage` table."""

    agent: str
    rig: str | None
    model: str
    upstream: str
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_usd: float
    duration_ms: float
    status: int
    outcome: str
    stream: bool
    request_id: str | None = None
    error: str | None = None  # why it failed: the upstream's error message or the gateway's own

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens


class UsageRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- budgets -----------------------------------------------------------------------------------
    def budgets(self, tx: Tx | sqlite3.Connection, keys: Sequence[BudgetKey]) -> list[sqlite3.Row]:
        """The budget rows of `keys` that exist, in the order of `keys` (one statement)."""
        where = " OR ".join(["(scope=? AND name=?)"] * len(keys))
        found = {(r["scope"], r["name"]): r for r in tx.execute(f"SELECT * FROM budgets WHERE {where}", _flat(keys))}
        return [found[k] for k in keys if k in found]

    def budgets_reserved(self, tx: Tx, keys: Sequence[BudgetKey]) -> list[sqlite3.Row]:
        """The budget rows of `keys` that exist, in the order of `keys`, each with what live reservations hold in
        its scope (`reserved_tokens`, `reserved_usd`): what admitting a request reads, in one statement."""
        where = " OR ".join(["(b.scope=? AND b.name=?)"] * len(keys))
        sql = f"""SELECT b.*, COALESCE(SUM(r.tokens), 0) AS reserved_tokens, COALESCE(SUM(r.usd), 0) AS reserved_usd
                  FROM budgets AS b LEFT JOIN reservations AS r ON CASE b.scope WHEN 'agent' THEN r.agent = b.name
                      WHEN 'rig' THEN r.rig = b.name ELSE 1 END
                  WHERE {where} GROUP BY b.scope, b.name"""
        found = {(r["scope"], r["name"]): r for r in tx.execute(sql, _flat(keys))}
        return [found[k] for k in keys if k in found]

    def list_budgets(self, scope: str | None = None, name: str | None = None) -> list[sqlite3.Row]:
        sql, params = "SELECT * FROM budgets WHERE 1=1", []
        if scope is not None:
            sql += " AND scope=?"
            params.append(scope)
        if name is not None:
            sql += " AND name=?"
            params.append(name)
        return self.db.query(sql + " ORDER BY scope, name", params)

    def spent_so_far(self, tx: Tx, scope: str, name: str) -> tuple[int, float]:
        """Totals already in the usage table for a scope, so a budget set late still counts the past."""
        where, params = _scope_filter(scope, name)
        sums = (
            "COALESCE(SUM(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens), 0), "
            "COALESCE(SUM(cost_usd), 0)"
        )
        row = tx.execute(
            f"SELECT {sums} FROM usage WHERE {where} UNION ALL SELECT {sums} FROM usage_daily WHERE {where}",
            (*params, *params),
        ).fetchall()
        return int(row[0][0] + row[1][0]), float(row[0][1] + row[1][1])

    def reserved_so_far(self, tx: Tx | sqlite3.Connection, scope: str, name: str) -> tuple[int, float]:
        where, params = _scope_filter(scope, name)
        row = tx.execute(
            f"SELECT COALESCE(SUM(tokens), 0) AS t, COALESCE(SUM(usd), 0) AS u FROM reservations WHERE {where}",
            params,
        ).fetchone()
        return int(row["t"]), float(row["u"])

    def upsert_budget(
        self, tx: Tx, scope: str, name: str, token_limit: int | None, usd_limit: float | None, actor: str
    ) -> sqlite3.Row | None:
        before = tx.execute("SELECT * FROM budgets WHERE scope=? AND name=?", (scope, name)).fetchone()
        if before is None:
            tokens, usd = self.spent_so_far(tx, scope, name)
            tx.execute(
                """INSERT INTO budgets (scope, name, token_limit, usd_limit, tokens_spent, usd_spent,
                   updated_at, updated_by) VALUES (?,?,?,?,?,?,?,?)""",
                (scope, name, token_limit, usd_limit, tokens, usd, tx.now, actor),
            )
        else:
            # A raised limit re-opens an exhausted budget; the next refusal marks it again.
            tx.execute(
                """UPDATE budgets SET token_limit=?, usd_limit=?, exhausted_at=NULL, updated_at=?, updated_by=?
                   WHERE scope=? AND name=?""",
                (token_limit, usd_limit, tx.now, actor, scope, name),
            )
        return before

    def delete_budget(self, tx: Tx, scope: str, name: str) -> sqlite3.Row | None:
        before = tx.execute("SELECT * FROM budgets WHERE scope=? AND name=?", (scope, name)).fetchone()
        tx.execute("DELETE FROM budgets WHERE scope=? AND name=?", (scope, name))
        return before

    def add_spent(self, tx: Tx, keys: Sequence[BudgetKey], tokens: int, usd: float) -> list[dict[str, Any]]:
        """Add to the running totals of `keys`' budgets; returns their rows as updated. One read finds the budgets
        that exist (most towns have one or none that applies), then one update each by its key: an UPDATE over
        several keys, or with RETURNING, makes SQLite build a scratch table every time."""
        updated = []
        for row in self.budgets(tx, keys):
            tx.execute(
                "UPDATE budgets SET tokens_spent = tokens_spent + ?, usd_spent = usd_spent + ? "
                "WHERE scope=? AND name=?",
                (tokens, usd, row["scope"], row["name"]),
            )
            updated.append(
                {**dict(row), "tokens_spent": row["tokens_spent"] + tokens, "usd_spent": row["usd_spent"] + usd}
            )
        return updated

    def mark_exhausted(self, tx: Tx, scope: str, name: str) -> bool:
        """Stamp a budget exhausted; True only the first time, so the event fires once per exhaustion."""
        cur = tx.execute(
            "UPDATE budgets SET exhausted_at=? WHERE scope=? AND name=? AND exhausted_at IS NULL",
            (tx.now, scope, name),
        )
        return cur.rowcount > 0

    # -- reservations ------------------------------------------------------------------------------
    def add_reservation(
        self, tx: Tx, agent: str, rig: str | None, model: str, tokens: int, usd: float, owner: str | None = None
    ) -> int:
        cur = tx.execute(
            "INSERT INTO reservations (agent, rig, model, tokens, usd, created_at, owner) VALUES (?,?,?,?,?,?,?)",
            (agent, rig, model, tokens, usd, tx.now, owner),
        )
        return int(cur.lastrowid or 0)

    def reservations_not_owned_by(self, tx: Tx, owner: str) -> list[sqlite3.Row]:
        """Every reservation another (or no) gateway instance made."""
        sql = "SELECT * FROM reservations WHERE owner IS NULL OR owner != ? ORDER BY id"
        return tx.execute(sql, (owner,)).fetchall()

    def take_reservation(self, tx: Tx, reservation_id: int) -> bool:
        """Drop a reservation; whether it was there."""
        return tx.execute("DELETE FROM reservations WHERE id=?", (reservation_id,)).rowcount > 0

    def stale_reservations(self, tx: Tx, older_than: str) -> list[sqlite3.Row]:
        return tx.execute("SELECT * FROM reservations WHERE created_at < ?", (older_than,)).fetchall()

    # -- usage rows --------------------------------------------------------------------------------
    def insert_usage(self, tx: Tx, row: UsageRow) -> int:
        cur = tx.execute(
            """INSERT INTO usage (at, agent, rig, model, upstream, input_tokens, output_tokens,
               cache_creation_tokens, cache_read_tokens, cost_usd, duration_ms, status, outcome, stream,
               request_id, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (
                tx.now,
                row.agent,
                row.rig,
                row.model,
                row.upstream,
                row.input_tokens,
                row.output_tokens,
                row.cache_creation_tokens,
                row.cache_read_tokens,
                row.cost_usd,
                row.duration_ms,
                row.status,
                row.outcome,
                int(row.stream),
                row.request_id,
                row.error,
            ),
        )
        return int(cur.lastrowid or 0)

    def recent(self, agent: str | None = None, limit: int = 100) -> list[sqlite3.Row]:
        if agent is None:
            return self.db.query("SELECT * FROM usage ORDER BY id DESC LIMIT ?", (limit,))
        return self.db.query("SELECT * FROM usage WHERE agent=? ORDER BY id DESC LIMIT ?", (agent, limit))

    def totals_by_agent(self, agent: str | None = None) -> list[sqlite3.Row]:
        """Per agent: recent usage rows plus the daily totals older rows were rolled into."""
        where, params = ("WHERE agent=?", (agent,)) if agent is not None else ("", ())
        sql = f"""SELECT agent, MAX(rig) AS rig, SUM(requests) AS requests, SUM(refused) AS refused,
                 SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
                 SUM(cache_creation_tokens) AS cache_creation_tokens, SUM(cache_read_tokens) AS cache_read_tokens,
                 SUM(cost_usd) AS cost_usd, MAX(last_at) AS last_at, GROUP_CONCAT(upstreams) AS upstreams FROM (
                   SELECT agent, rig, COUNT(*) AS requests, SUM(outcome = 'refused') AS refused,
                          SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
                          SUM(cache_creation_tokens) AS cache_creation_tokens,
                          SUM(cache_read_tokens) AS cache_read_tokens, SUM(cost_usd) AS cost_usd, MAX(at) AS last_at,
                          GROUP_CONCAT(DISTINCT NULLIF(upstream, '')) AS upstreams
                   FROM usage {where} GROUP BY agent
                   UNION ALL
                   SELECT agent, NULLIF(MAX(rig), '') AS rig, SUM(requests), SUM(refused), SUM(input_tokens),
                          SUM(output_tokens), SUM(cache_creation_tokens), SUM(cache_read_tokens), SUM(cost_usd),
                          MAX(last_at), NULL
                   FROM usage_daily {where} GROUP BY agent)
                 GROUP BY agent ORDER BY agent"""
        return self.db.query(sql, (*params, *params))

    def failing(self, agent: str | None = None) -> list[sqlite3.Row]:
        """Per agent whose latest model calls failed (outcome `error`, none `ok` since): how many in a row, the
        first of them, and the latest one's row (status, upstream, error, at)."""
        sql = """SELECT f.agent, f.failures, f.first_id, u.id, u.status, u.upstream, u.model, u.error, u.at
                 FROM (SELECT agent, COUNT(*) AS failures, MIN(id) AS first_id, MAX(id) AS last_id FROM usage AS e
                       WHERE outcome = 'error' AND (? IS NULL OR agent = ?) AND id > COALESCE(
                           (SELECT MAX(id) FROM usage AS o WHERE o.agent = e.agent AND o.outcome = 'ok'), 0)
                       GROUP BY agent) AS f
                 JOIN usage AS u ON u.id = f.last_id ORDER BY f.agent"""
        return self.db.query(sql, (agent, agent))

    # -- routes ------------------------------------------------------------------------------------
    def set_route(self, tx: Tx, agent: str, model: str, upstream: str, actor: str) -> None:
        tx.execute(
            """INSERT INTO routes (agent, model, upstream, created_at, created_by) VALUES (?,?,?,?,?)
               ON CONFLICT (agent, model) DO UPDATE SET upstream=excluded.upstream,
               created_at=excluded.created_at, created_by=excluded.created_by""",
            (agent, model, upstream, tx.now, actor),
        )

    def delete_route(self, tx: Tx, agent: str, model: str) -> bool:
        return tx.execute("DELETE FROM routes WHERE agent=? AND model=?", (agent, model)).rowcount > 0

    def routes(self) -> list[sqlite3.Row]:
        return self.db.query("SELECT * FROM routes ORDER BY id")

    def routes_version(self) -> tuple[int, str]:
        """Changes whenever a route is set or cleared, by any process: what a cache of the table checks."""
        row = self.db.query_one("SELECT count(*) AS n, coalesce(max(created_at), '') AS latest FROM routes")
        return (int(row["n"]), str(row["latest"])) if row else (0, "")


def _scope_filter(scope: str, name: str) -> tuple[str, tuple[Any, ...]]:
    if scope == "agent":
        return "agent=?", (name,)
    if scope == "rig":
        return "rig=?", (name,)
    return "1=1", ()


def _flat(keys: Sequence[BudgetKey]) -> list[str]:
    return [part for key in keys for part in key]
