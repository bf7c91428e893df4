"""What keeps the store's history from growing without bound: the agent archive, usage roll-ups, event rotation.

Exited agents past a retention move to `agents_archive`; usage rows past a
retention become one `usage_daily` row per agent, rig, model and day; events past a retention are written to a
compressed JSONL file under `archive/` and dropped from the table. Each move is journaled like any write.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

from gastown_mcp.models import AgentState
from gastown_mcp.store.db import Database

CHUNK = 20_000  # rows per transaction when moving history: keeps each journal line and lock hold small
AGENT_COLUMNS = "name, role, rig, state, token_hash, gateway_key_hash, created_at, last_seen, removed_at, metadata"
FINISHED = (AgentState.exited.value, AgentState.removed.value)


class GrowthRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def archive_agents(self, before: str) -> int:
        """Move agents that exited (or were removed) before `before` and hold nothing out of the hot table."""
        moved = 0
        while True:
            with self.db.write() as tx:
                names = [
                    r[0]
                    for r in tx.execute(
                        f"""SELECT name FROM agents a INDEXED BY agents_state
                            WHERE state IN ({",".join("?" * len(FINISHED))})
                              AND coalesce(json_extract(metadata, '$.ended_at'), removed_at, last_seen, created_at) < ?
                              AND NOT EXISTS (SELECT 1 FROM beads WHERE assignee = a.name)
                              AND NOT EXISTS (SELECT 1 FROM messages WHERE recipient = a.name AND kind = 'nudge'
                                              AND state = 'sent')
                            LIMIT ?""",
                        (*FINISHED, before, CHUNK),
                    )
                ]
                if not names:
                    return moved
                marks = ",".join("?" * len(names))
                tx.execute(
                    f"INSERT OR REPLACE INTO agents_archive ({AGENT_COLUMNS}, archived_at) "
                    f"SELECT {AGENT_COLUMNS}, ? FROM agents WHERE name IN ({marks})",
                    (tx.now, *names),
                )
                tx.execute(f"DELETE FROM agents WHERE name IN ({marks})", names)
            moved += len(names)
            if len(names) < CHUNK:
                return moved

    def roll_usage(self, before: str) -> int:
        """Fold usage rows older than `before` into `usage_daily`; how many rows were folded."""
        folded = 0
        while True:
            with self.db.write() as tx:
                row = tx.execute(
                    "SELECT max(id) FROM (SELECT id FROM usage WHERE at < ? ORDER BY id LIMIT ?)", (before, CHUNK)
                ).fetchone()
                top = row[0] if row else None
                if top is None:
                    return folded
                tx.execute(
                    """INSERT INTO usage_daily (day, agent, rig, model, requests, refused, input_tokens, output_tokens,
                           cache_creation_tokens, cache_read_tokens, cost_usd, duration_ms, last_at)
                       SELECT substr(at, 1, 10), agent, coalesce(rig, ''), model, count(*), sum(outcome = 'refused'),
                              sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens),
                              sum(cache_read_tokens), sum(cost_usd), sum(duration_ms), max(at)
                       FROM usage WHERE id <= ? AND at < ? GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
                       ON CONFLICT (day, agent, rig, model) DO UPDATE SET
                           requests = requests + excluded.requests, refused = refused + excluded.refused,
                           input_tokens = input_tokens + excluded.input_tokens,
                           output_tokens = output_tokens + excluded.output_tokens,
                           cache_creation_tokens = cache_creation_tokens + excluded.cache_creation_tokens,
                           cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
                           cost_usd = cost_usd + excluded.cost_usd, duration_ms = duration_ms + excluded.duration_ms,
                           last_at = max(last_at, excluded.last_at)""",
                    (top, before),
                )
                n = tx.execute("DELETE FROM usage WHERE id <= ? AND at < ?", (top, before)).rowcount
            folded += n
            if n < CHUNK:
                return folded

    def rotate_events(self, before: str, archive_dir: Path) -> int:
        """Write events older than `before` to `archive_dir/events-<first>-<last>.jsonl.gz`, then drop them.

        Events are stamped in the order they are written (under the write lock), so the old ones are the oldest ids:
        each round reads the lowest `CHUNK` ids and takes them up to the first one stamped at or after `before` (no
        index on `at`: it would cost every event written a page of the database file). An event stamped out of
        order (the clock stepped back) waits for a later rotation."""
        moved = 0
        while True:
            window = self.db.query("SELECT * FROM events ORDER BY id LIMIT ?", (CHUNK,))
            found = list(itertools.takewhile(lambda r: r["at"] < before, window))
            if not found:
                return moved
            first, last = found[0]["id"], found[-1]["id"]
            archive_dir.mkdir(parents=True, exist_ok=True)
            target = archive_dir / f"events-{first:012d}-{last:012d}.jsonl.gz"
            part = target.with_name(target.name + ".part")
            with gzip.open(part, "wt", encoding="utf-8") as out:
                for r in found:
                    record: dict[str, Any] = {k: r[k] for k in r.keys()}  # noqa: SIM118 - sqlite3.Row
                    for key in ("before", "after"):
                        record[key] = json.loads(record[key]) if record[key] else None
                    out.write(json.dumps(record, sort_keys=True) + "\n")
            part.replace(target)  # on disk before the rows go: a crash in between leaves them in both places
            with self.db.write() as tx:
                tx.execute("DELETE FROM events WHERE id BETWEEN ? AND ? AND at < ?", (first, last, before))
            moved += len(found)
            if len(found) < len(window) or len(window) < CHUNK:
                return moved
