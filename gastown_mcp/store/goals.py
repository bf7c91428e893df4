"""Goals and directives: what the operator wants, and the tracked instructions the overseer gives the mayor.

A directive and the message that carries it (a nudge to the mayor, or mail to the operator for an escalation)
are written in one transaction with their event, so a directive is never issued without reaching anyone.
An open directive's `dedup_key` is unique (partial index), so the same directive cannot be open twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from gastown_mcp.errors import Conflict, InvalidTransition, NotFound
from gastown_mcp.models import MessageKind, Verb
from gastown_mcp.store.db import Database
from gastown_mcp.store.messages import send_in

OPEN = ("issued", "acknowledged")
NEXT_STATES = {"issued": ("acknowledged", "done", "refused"), "acknowledged": ("done", "refused")}
CURSOR = "overseer_cursor:"  # meta key prefix: the last event id a loop has read, by loop name


class GoalRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- goals -------------------------------------------------------------------------------------
    def add_goal(self, actor: str, text: str, rig: str | None, budget_usd: float | None) -> int:
        with self.db.write() as tx:
            cur = tx.execute(
                "INSERT INTO goals (text, rig, budget_usd, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                (text, rig, budget_usd, actor, tx.now, tx.now),
            )
            goal_id = int(cur.lastrowid or 0)
            tx.event(actor, Verb.goal_added, after={"goal": goal_id, "text": text[:500], "rig": rig})
        return goal_id

    def goal(self, goal_id: int) -> sqlite3.Row:
        row = self.db.query_one("SELECT * FROM goals WHERE id=?", (goal_id,))
        if row is None:
            raise NotFound(f"no goal {goal_id}; list goals with `gastown goal list`")
        return row

    def goals(self, state: str | None = None, limit: int = 50) -> list[sqlite3.Row]:
        if state is None:
            return self.db.query("SELECT * FROM goals ORDER BY id DESC LIMIT ?", (limit,))
        return self.db.query("SELECT * FROM goals WHERE state=? ORDER BY id DESC LIMIT ?", (state, limit))

    def convoys_of(self, goal_id: int) -> list[str]:
        found = self.db.query("SELECT convoy_id FROM goal_convoys WHERE goal_id=? ORDER BY id", (goal_id,))
        return [r["convoy_id"] for r in found]

    def goals_of_convoy(self, convoy_id: str) -> list[int]:
        found = self.db.query("SELECT goal_id FROM goal_convoys WHERE convoy_id=? ORDER BY goal_id", (convoy_id,))
        return [int(r["goal_id"]) for r in found]

    def spent(self, goal_id: int) -> tuple[float, int]:
        """USD and tokens the gateway metered for agents whose hook was a bead of the goal's convoys."""
        row = self.db.query_one(
            """SELECT coalesce(sum(u.cost_usd), 0) AS usd, coalesce(sum(u.input_tokens + u.output_tokens
                      + u.cache_creation_tokens + u.cache_read_tokens), 0) AS tokens
               FROM usage u JOIN agents a ON a.name = u.agent
               WHERE json_extract(a.metadata, '$.hook') IN (
                   SELECT d.bead_id FROM deps d JOIN goal_convoys g ON g.convoy_id = d.depends_on
                   WHERE g.goal_id = ? AND d.kind = 'parent')""",
            (goal_id,),
        )
        return (float(row["usd"]), int(row["tokens"])) if row else (0.0, 0)

    def link(self, actor: str, goal_id: int, convoy_id: str) -> bool:
        """Link a convoy to a goal; False when it already was."""
        with self.db.write() as tx:
            cur = tx.execute(
                "INSERT OR IGNORE INTO goal_convoys (goal_id, convoy_id, created_at) VALUES (?,?,?)",
                (goal_id, convoy_id, tx.now),
            )
            if not cur.rowcount:
                return False
            tx.execute("UPDATE goals SET updated_at=? WHERE id=?", (tx.now, goal_id))
            tx.event(actor, Verb.goal_linked, bead_id=convoy_id, after={"goal": goal_id, "convoy": convoy_id})
        return True

    def close_goal(self, actor: str, goal_id: int, state: str, reason: str, details: dict[str, Any]) -> bool:
        """An active goal becomes achieved or abandoned; False when it was no longer active."""
        verb = Verb.goal_achieved if state == "achieved" else Verb.goal_abandoned
        with self.db.write() as tx:
            cur = tx.execute(
                "UPDATE goals SET state=?, reason=?, updated_at=?, closed_at=? WHERE id=? AND state='active'",
                (state, reason, tx.now, tx.now, goal_id),
            )
            if not cur.rowcount:
                return False
            tx.event(actor, verb, after={"goal": goal_id, "reason": reason, **details})
        return True

    # -- directives --------------------------------------------------------------------------------
    def issue(
        self,
        actor: str,
        *,
        kind: str,
        args: dict[str, Any],
        goal_id: int | None,
        key: str,
        reason: str,
        recipient: str,
        delivery: MessageKind,
        message: Callable[[int], tuple[str, str]],
        attempts: int,
        next_at: str | None,
    ) -> int:
        """The directive, its message and its event, at once; `Conflict` when one with `key` is open.
        `message(id)` gives the message's body and subject for the new directive's id."""
        with self.db.write() as tx:
            open_id = tx.execute(
                "SELECT id FROM directives WHERE dedup_key=? AND state IN ('issued','acknowledged')", (key,)
            ).fetchone()
            if open_id is not None:
                raise Conflict(f"directive #{open_id['id']} ({key}) is still open; it is not issued twice")
            cur = tx.execute(
                """INSERT INTO directives (kind, args, goal_id, dedup_key, recipient, reason, attempts, next_at,
                   created_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                (kind, json.dumps(args, sort_keys=True), goal_id, key, recipient, reason, attempts, next_at, actor,
                 tx.now, tx.now),
            )  # fmt: skip
            directive_id = int(cur.lastrowid or 0)
            body, subject = message(directive_id)
            message_id = send_in(tx, actor, recipient, delivery, body, subject)
            tx.execute("UPDATE directives SET message_id=? WHERE id=?", (message_id, directive_id))
            tx.event(
                actor,
                Verb.directive_issued,
                agent=recipient,
                after={
                    "directive": directive_id,
                    "kind": kind,
                    "args": args,
                    "goal": goal_id,
                    "key": key,
                    "reason": reason,
                    "attempts": attempts,
                    "message_id": message_id,
                },
            )
        return directive_id

    def directive(self, directive_id: int) -> sqlite3.Row:
        row = self.db.query_one("SELECT * FROM directives WHERE id=?", (directive_id,))
        if row is None:
            raise NotFound(f"no directive {directive_id}; list them with directive_list")
        return row

    def directives(
        self, states: Sequence[str] = (), recipient: str | None = None, limit: int = 50
    ) -> list[sqlite3.Row]:
        sql, params = "SELECT * FROM directives WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        if recipient is not None:
            sql += " AND recipient=?"
            params.append(recipient)
        return self.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))

    def history(self, key: str) -> list[sqlite3.Row]:
        """Every directive ever issued under `key`, oldest first."""
        return self.db.query("SELECT * FROM directives WHERE dedup_key=? ORDER BY id", (key,))

    def set_state(self, actor: str, directive_id: int, state: str, note: str) -> sqlite3.Row:
        verb = {"acknowledged": Verb.directive_acknowledged, "done": Verb.directive_done}.get(
            state, Verb.directive_refused
        )
        with self.db.write() as tx:
            row = tx.execute("SELECT * FROM directives WHERE id=?", (directive_id,)).fetchone()
            if row is None:
                raise NotFound(f"no directive {directive_id}; list them with directive_list")
            if state not in NEXT_STATES.get(row["state"], ()):
                raise InvalidTransition(
                    f"directive #{directive_id} is {row['state']}; it can go to "
                    f"{' or '.join(NEXT_STATES.get(row['state'], ())) or 'nothing else'}, not {state}"
                )
            closing = state in ("done", "refused")
            tx.execute(
                """UPDATE directives SET state=?, note=CASE WHEN ?='' THEN note ELSE ? END, updated_at=?,
                   acknowledged_at=coalesce(acknowledged_at, ?), closed_at=CASE WHEN ? THEN ? ELSE closed_at END
                   WHERE id=?""",
                (state, note, note, tx.now, tx.now, closing, tx.now, directive_id),
            )
            if row["message_id"] is not None:  # the message that carried it is read: it was acted on
                tx.execute(
                    """UPDATE messages SET state='acknowledged', acknowledged_at=?,
                       delivered_at=coalesce(delivered_at, ?) WHERE id=? AND state != 'acknowledged'""",
                    (tx.now, tx.now, row["message_id"]),
                )
            tx.event(
                actor,
                verb,
                agent=row["recipient"],
                after={"directive": directive_id, "kind": row["kind"], "key": row["dedup_key"], "note": note[:2000]},
            )
            found = tx.execute("SELECT * FROM directives WHERE id=?", (directive_id,)).fetchone()
        return found

    def record(self, actor: str, verb: Verb, after: dict[str, Any], bead_id: str | None = None) -> None:
        """An event on its own (an overseer decision and its reasons)."""
        with self.db.write() as tx:
            tx.event(actor, verb, bead_id=bead_id, after=after)

    def cursor(self, name: str) -> int | None:
        """The last event id the loop `name` has read, or None before its first tick."""
        row = self.db.query_one("SELECT value FROM meta WHERE key=?", (CURSOR + name,))
        return int(json.loads(row["value"])["event"]) if row else None

    def set_cursor(self, name: str, event_id: int) -> None:
        """Keep the loop's cursor (no event: writing one would be news for the loop itself)."""
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (CURSOR + name, json.dumps({"event": int(event_id)})),
            )

    def failures(self, bead_id: str, verbs: Sequence[str]) -> int:
        """How many times a bead failed (events with one of `verbs`)."""
        row = self.db.query_one(
            f"SELECT count(*) AS n FROM events WHERE bead_id=? AND verb IN ({','.join('?' * len(verbs))})",
            (bead_id, *verbs),
        )
        return int(row["n"]) if row else 0
