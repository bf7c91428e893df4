"""Mail and nudges between agents, with delivery tracked: sent → delivered → acknowledged."""

from __future__ import annotations

from gastown_mcp.errors import NotFound
from gastown_mcp.models import Message, MessageKind, Verb
from gastown_mcp.store import rows
from gastown_mcp.store.db import Database, Tx


def send_in(
    tx: Tx, sender: str, recipient: str, kind: MessageKind, body: str, subject: str = "", thread: str | None = None
) -> int:
    """A message and its event inside the caller's transaction (so mail can go out with the change it reports)."""
    cur = tx.execute(
        """INSERT INTO messages (kind, sender, recipient, subject, body, thread, created_at)
           VALUES (?,?,?,?,?,?,?)""",
        (kind.value, sender, recipient, subject, body, thread, tx.now),
    )
    mid = int(cur.lastrowid or 0)
    tx.event(
        sender,
        Verb.of_message(kind),
        agent=recipient,
        after={"message_id": mid, "subject": subject} if kind is MessageKind.mail else {"message_id": mid},
    )
    return mid


class MessageRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def send(
        self,
        sender: str,
        recipient: str,
        kind: MessageKind,
        body: str,
        subject: str = "",
        thread: str | None = None,
    ) -> Message:
        with self.db.write() as tx:
            mid = send_in(tx, sender, recipient, kind, body, subject, thread)
        return self.get(mid)

    def get(self, message_id: int) -> Message:
        row = self.db.query_one("SELECT * FROM messages WHERE id=?", (message_id,))
        if row is None:
            raise NotFound(f"no message {message_id}")
        return rows.message(row)

    def has_pending_nudge(self, recipient: str) -> bool:
        return (
            self.db.query_one(
                "SELECT 1 FROM messages WHERE recipient=? AND kind='nudge' AND state='sent' LIMIT 1",
                (recipient,),
            )
            is not None
        )

    def deliver_nudges(self, recipient: str) -> list[Message]:
        """Take every pending nudge for `recipient` and mark it delivered, atomically."""
        with self.db.write() as tx:
            taken = tx.execute(
                """UPDATE messages SET state='delivered', delivered_at=?
                   WHERE recipient=? AND kind='nudge' AND state='sent' RETURNING *""",
                (tx.now, recipient),
            ).fetchall()
            for row in taken:
                tx.event(recipient, Verb.nudge_delivered, agent=recipient, after={"message_id": row["id"]})
        return sorted((rows.message(r) for r in taken), key=lambda m: m.id)

    def inbox(self, recipient: str, *, unread_only: bool = False, limit: int = 50) -> list[Message]:
        """List mail and nudges; listing marks them delivered."""
        sql = "SELECT * FROM messages WHERE recipient=?"
        if unread_only:
            sql += " AND state != 'acknowledged'"
        found = self.db.query(sql + " ORDER BY id DESC LIMIT ?", (recipient, limit))
        fresh = [r["id"] for r in found if r["state"] == "sent"]
        if fresh:
            with self.db.write() as tx:
                marks = ",".join("?" * len(fresh))
                tx.execute(
                    f"UPDATE messages SET state='delivered', delivered_at=? WHERE id IN ({marks}) AND state='sent'",
                    (tx.now, *fresh),
                )
                for mid in fresh:
                    tx.event(recipient, Verb.message_delivered, agent=recipient, after={"message_id": mid})
            found = self.db.query(
                f"SELECT * FROM messages WHERE id IN ({','.join(str(r['id']) for r in found)}) ORDER BY id DESC"
            )
        return [rows.message(r) for r in found]

    def acknowledge(self, recipient: str, ids: list[int]) -> int:
        if not ids:
            return 0
        with self.db.write() as tx:
            marks = ",".join("?" * len(ids))
            # Audit only what changed: not other agents' messages, unknown ids, or repeats.
            changed = tx.execute(
                f"""UPDATE messages SET state='acknowledged', acknowledged_at=?,
                    delivered_at=coalesce(delivered_at, ?)
                    WHERE recipient=? AND id IN ({marks}) AND state != 'acknowledged' RETURNING id""",
                (tx.now, tx.now, recipient, *ids),
            ).fetchall()
            for mid in sorted(r["id"] for r in changed):
                tx.event(recipient, Verb.message_acknowledged, agent=recipient, after={"message_id": mid})
            return len(changed)

    def nudges(self, recipient: str | None = None, limit: int = 50) -> list[Message]:
        sql, params = "SELECT * FROM messages WHERE kind='nudge'", []
        if recipient:
            sql += " AND recipient=?"
            params.append(recipient)
        return [rows.message(r) for r in self.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))]

    def pending_count(self, recipient: str | None = None) -> int:
        """Nudges sent and not yet delivered, town-wide or for one recipient."""
        sql, params = "SELECT count(*) AS n FROM messages WHERE kind='nudge' AND state='sent'", []
        if recipient is not None:
            sql += " AND recipient=?"
            params.append(recipient)
        row = self.db.query_one(sql, params)
        return int(row["n"]) if row else 0
