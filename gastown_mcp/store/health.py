"""Town-wide switches and the facts the dogs read: the emergency stop, a dispatch hold, mail sent once, and
upstream status codes counted from usage rows. Switches live in `meta` so the journal carries them too."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from gastown_mcp.models import MessageKind, Verb, now_iso
from gastown_mcp.store.db import Database
from gastown_mcp.store.messages import send_in

ESTOP = "estop"
FROZEN = "frozen_intervals"  # the last emergency stops as [start, end] epoch seconds
KEEP_FROZEN = 50
HOLD = "dispatch_hold"
MAILED = "dog_mailed:"


class HealthRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.query_one("SELECT value FROM meta WHERE key=?", (key,))
        return json.loads(row["value"]) if row else None

    def set(self, actor: str, key: str, value: dict[str, Any], verb: Verb) -> bool:
        """Set a switch and record who and why; False when it already held this value (no event)."""
        with self.db.write() as tx:
            row = tx.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            before = json.loads(row["value"]) if row else None
            if before is not None and {k: before.get(k) for k in value if k != "at"} == {
                k: v for k, v in value.items() if k != "at"
            }:
                return False
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value, sort_keys=True)),
            )
            tx.event(actor, verb, before=before, after=value)
        return True

    def clear(self, actor: str, key: str, verb: Verb, why: str = "") -> dict[str, Any] | None:
        with self.db.write() as tx:
            row = tx.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row is None:
                return None
            before: dict[str, Any] = json.loads(row["value"])
            tx.execute("DELETE FROM meta WHERE key=?", (key,))
            tx.event(actor, verb, before=before, after={"by": actor, "reason": why})
        return before

    def add_frozen(self, start: float, end: float) -> None:
        """Remember that the town was frozen from `start` to `end` (the last few stops are kept)."""
        with self.db.write() as tx:
            row = tx.execute("SELECT value FROM meta WHERE key=?", (FROZEN,)).fetchone()
            kept = json.loads(row["value"])["intervals"] if row else []
            kept = [*kept, [start, end]][-KEEP_FROZEN:]
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (FROZEN, json.dumps({"intervals": kept})),
            )

    def frozen_within(self, window_s: float, now: float) -> float:
        """Seconds the town spent frozen in the last `window_s` seconds (a stop still in force counts to now)."""
        row = self.db.query_one("SELECT value FROM meta WHERE key=?", (FROZEN,))
        intervals = [tuple(i) for i in json.loads(row["value"])["intervals"]] if row else []
        stop = self.get(ESTOP)
        if stop is not None and stop.get("at"):
            intervals.append((epoch(str(stop["at"])), now))
        since = now - window_s
        return sum(max(0.0, min(end, now) - max(start, since)) for start, end in intervals)

    def mail_once(self, sender: str, recipient: str, key: str, subject: str, body: str) -> bool:
        """Mail `recipient` about finding `key` unless already mailed (until `forget(key)`)."""
        with self.db.write() as tx:
            if tx.execute("SELECT 1 FROM meta WHERE key=?", (MAILED + key,)).fetchone():
                return False
            tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (MAILED + key, json.dumps({"at": tx.now})))
            send_in(tx, sender, recipient, MessageKind.mail, body, subject)
        return True

    def forget(self, key: str) -> None:
        with self.db.write() as tx:
            tx.execute("DELETE FROM meta WHERE key=?", (MAILED + key,))

    def upstream_status_count(self, status: int, since: str) -> int:
        """Requests the upstream answered with `status` (gateway refusals are outcome 'refused', not counted)."""
        row = self.db.query_one(
            "SELECT count(*) AS n FROM usage WHERE status=? AND outcome='error' AND at>=? AND upstream<>''",
            (status, since),
        )
        return int(row["n"]) if row else 0

    def town_budget_spent(self) -> bool:
        row = self.db.query_one("SELECT 1 AS x FROM budgets WHERE scope='town' AND exhausted_at IS NOT NULL LIMIT 1")
        return row is not None

    def restart_timers(self, lease_seconds: float) -> None:
        """After a thaw: leases of beads in progress run a full term again, and agents count idle from now."""
        with self.db.write() as tx:
            tx.execute(
                "UPDATE beads SET lease_expires_at=? WHERE status='in_progress' AND lease_expires_at IS NOT NULL",
                (now_iso(time.time() + lease_seconds),),
            )
            tx.execute("UPDATE agents SET last_seen=? WHERE removed_at IS NULL AND last_seen IS NOT NULL", (tx.now,))


def epoch(iso: str) -> float:
    """Epoch seconds of an ISO time as the store writes it."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
