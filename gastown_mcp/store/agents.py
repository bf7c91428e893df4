"""Agents: identity (name, role, rig), lifecycle state, and credentials stored only as hashes.

Each agent has two secrets, shown once at creation: an MCP bearer token and a gateway virtual key.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from gastown_mcp.errors import Conflict, NotFound
from gastown_mcp.models import ALIVE_STATES, Agent, AgentState, Role, Verb
from gastown_mcp.store import counts as maintained
from gastown_mcp.store import glance, rows
from gastown_mcp.store.db import Database, Tx

TOKEN_PREFIX = "gt_"
KEY_PREFIX = "gtk_"
LIVE = tuple(sorted(s.value for s in ALIVE_STATES))


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """What an agent needs to act: shown once, never stored in clear."""

    agent: Agent
    token: str
    gateway_key: str


class AgentRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        actor: str,
        name: str,
        role: Role,
        rig: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Credentials:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as tx:
            self._insert(tx, actor, name, role, rig, metadata or {}, (secret_hash(token), secret_hash(key)))
        return Credentials(self.get(name), token, key)

    def _insert(
        self,
        tx: Tx,
        actor: str,
        name: str,
        role: Role,
        rig: str | None,
        metadata: dict[str, Any],
        hashes: tuple[str, str] | None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """A new agent row (a removed agent's name can be reused); `hashes` None = no credentials yet."""
        old = tx.execute("SELECT state FROM agents WHERE name=?", (name,)).fetchone()
        if old is not None and old["state"] != AgentState.removed.value:
            raise Conflict(f"agent {name!r} already exists; pick another name or remove it first")
        if old is not None:
            tx.execute("DELETE FROM agents WHERE name=?", (name,))
        gone = tx.execute("SELECT state FROM agents_archive WHERE name=?", (name,)).fetchone()
        if gone is not None and gone["state"] != AgentState.removed.value:
            raise Conflict(f"agent {name!r} existed (it has exited and is archived); pick another name")
        if gone is not None:
            tx.execute("DELETE FROM agents_archive WHERE name=?", (name,))
        token_hash, key_hash = hashes or (None, None)
        tx.execute(
            """INSERT INTO agents (name, role, rig, state, token_hash, gateway_key_hash, created_at, metadata)
               VALUES (?,?,?,?,?,?,?,?)""",
            (name, role.value, rig, AgentState.requested.value, token_hash, key_hash, tx.now, json.dumps(metadata)),
        )
        tx.event(actor, Verb.agent_created, agent=name, after={"role": role.value, "rig": rig, **(after or {})})

    def get(self, name: str) -> Agent:
        found = self.find(name)
        if found is None:
            raise NotFound(f"no agent {name!r}; list agents with `gastown agent list`")
        return found

    def find(self, name: str) -> Agent | None:
        """The agent by name: the hot table first, then the archive of agents that exited long ago."""
        row = glance.agent_row(self.db, name)
        return rows.agent(row) if row else None

    def taken(self, name: str) -> bool:
        """Whether `name` belongs to an agent, live, exited or archived (names are never reused silently)."""
        return (
            self.db.query_one(
                "SELECT 1 AS x FROM agents WHERE name=? UNION ALL SELECT 1 FROM agents_archive WHERE name=?",
                (name, name),
            )
            is not None
        )

    def free_name(self, pool: list[str], prefix: str) -> str:
        """The first name of `pool` nobody has, else `<prefix>-N` for the lowest free N from the count up."""
        for name in pool:
            if not self.taken(name):
                return name
        lo, hi = f"{prefix}-", f"{prefix}."  # the key range of every "<prefix>-..." name
        row = self.db.query_one(
            "SELECT (SELECT count(*) FROM agents WHERE name >= ? AND name < ?)"
            " + (SELECT count(*) FROM agents_archive WHERE name >= ? AND name < ?) AS n",
            (lo, hi, lo, hi),
        )
        n = int(row["n"]) + 1 if row else 1
        while self.taken(f"{prefix}-{n}"):
            n += 1
        return f"{prefix}-{n}"

    def live(self, *, role: Role | None = None, starting: bool = False) -> list[Agent]:
        """Agents whose process runs or is starting (and, with `starting`, those requested): an indexed read
        whatever the number of agents that ever lived."""
        states = [*LIVE, AgentState.requested.value] if starting else list(LIVE)
        sql = f"SELECT * FROM agents INDEXED BY agents_state WHERE state IN ({','.join('?' * len(states))})"
        params: list[Any] = states
        if role is not None:
            sql += " AND role=?"
            params.append(role.value)
        return [rows.agent(r) for r in self.db.query(sql + " ORDER BY created_at, name", params)]

    def resumable(self) -> list[Agent]:
        """Exited agents with a nudge waiting (the witness resumes their sessions with it)."""
        found = self.db.query(
            """SELECT a.* FROM messages m INDEXED BY messages_pending CROSS JOIN agents a ON a.name = m.recipient
               WHERE m.kind = 'nudge' AND m.state = 'sent' AND a.state = ? GROUP BY a.name ORDER BY a.name""",
            (AgentState.exited.value,),
        )
        return [rows.agent(r) for r in found]

    def epoch_and_nudge(self, name: str | None) -> tuple[int, bool]:
        """One read per MCP call: the identity epoch (bumped by every change to any agent's identity, state or
        metadata, in that change's transaction) and whether a nudge waits for `name`."""
        row = self.db.query_one(
            f"""SELECT (SELECT n FROM _counts WHERE key = '{maintained.EPOCH}') AS e,
                       EXISTS (SELECT 1 FROM messages INDEXED BY messages_pending
                               WHERE recipient = ? AND kind = 'nudge' AND state = 'sent') AS p""",
            (name,),
        )
        return (int(row["e"] or 0), bool(row["p"])) if row else (0, False)

    def by_token(self, token: str) -> Agent | None:
        row = self.db.query_one("SELECT * FROM agents WHERE token_hash=? AND state != 'removed'", (secret_hash(token),))
        return rows.agent(row) if row else None

    def by_gateway_key(self, key: str) -> Agent | None:
        row = self.db.query_one(
            "SELECT * FROM agents WHERE gateway_key_hash=? AND state != 'removed'", (secret_hash(key),)
        )
        return rows.agent(row) if row else None

    def all(self, *, role: Role | None = None, include_removed: bool = False) -> list[Agent]:
        sql, params = "SELECT * FROM agents WHERE 1=1", []
        if role is not None:
            sql += " AND role=?"
            params.append(role.value)
        if not include_removed:
            sql += " AND state != 'removed'"
        return [rows.agent(r) for r in self.db.query(sql + " ORDER BY created_at, name", params)]

    def rotate(self, actor: str, name: str) -> Credentials:
        """New MCP token and gateway key; the old ones stop working at once."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as tx:
            cur = tx.execute(
                "UPDATE agents SET token_hash=?, gateway_key_hash=? WHERE name=? AND state != 'removed'",
                (secret_hash(token), secret_hash(key), name),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no active agent {name!r}")
            tx.event(actor, Verb.agent_token_rotated, agent=name)
        return Credentials(self.get(name), token, key)

    def revoke(self, actor: str, name: str) -> None:
        """The agent's token and gateway key stop working (its container is gone; a new launch issues new ones)."""
        with self.db.write() as tx:
            cur = tx.execute(
                "UPDATE agents SET token_hash=NULL, gateway_key_hash=NULL WHERE name=? AND token_hash IS NOT NULL",
                (name,),
            )
            if cur.rowcount:
                tx.event(actor, Verb.agent_token_revoked, agent=name)

    def set_state(self, actor: str, name: str, state: AgentState, reason: str = "", **meta: Any) -> Agent:
        with self.db.write() as tx:
            row = tx.execute("SELECT * FROM agents WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no agent {name!r}")
            metadata = rows.loads(row["metadata"]) or {}
            metadata.update(meta)
            extra = ""
            params: list[Any] = [state.value, json.dumps(metadata)]
            if state is AgentState.removed:
                extra = ", token_hash=NULL, gateway_key_hash=NULL, removed_at=?"
                params.append(tx.now)
            if state in (AgentState.exited, AgentState.removed):
                metadata["ended_at"] = tx.now  # when the archive's retention starts counting
                params[1] = json.dumps(metadata)
            tx.execute(f"UPDATE agents SET state=?, metadata=?{extra} WHERE name=?", (*params, name))
            if row["state"] != state.value:
                tx.event(
                    actor,
                    Verb.of_agent_state(state),
                    agent=name,
                    before={"state": row["state"]},
                    after={"state": state.value, "reason": reason, **meta},
                )
        return self.get(name)

    def touch(self, name: str, lease_seconds: float) -> None:
        """The agent is alive: record when, and renew the leases on every bead it holds (not audited)."""
        glance.touch(self.db, name, lease_seconds)
