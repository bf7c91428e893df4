"""Launch intent: agents the town should start or stop, recorded by any surface and carried out by the one
reconciler inside `gastown up` (a request made while the town is down waits for it).

A requested agent and the bead on its hook are written in one transaction; `begin` is a compare-and-swap
(requested -> starting), so a launch is carried out once however many reconcilers race for it.
"""

from __future__ import annotations

import json
from typing import Any

from gastown_mcp.models import ALIVE_STATES, Agent, AgentState, Role, Verb
from gastown_mcp.store import rows
from gastown_mcp.store.agents import AgentRepo
from gastown_mcp.store.beads import BeadRepo
from gastown_mcp.store.db import Database

RUNNING, STOPPED = "running", "stopped"
ALIVE = tuple(s.value for s in ALIVE_STATES)


class LaunchRepo:
    def __init__(self, db: Database, beads: BeadRepo, agents: AgentRepo) -> None:
        self.db = db
        self.beads = beads
        self.agents = agents

    def request(
        self,
        actor: str,
        name: str,
        role: Role,
        rig: str | None,
        metadata: dict[str, Any],
        bead: str | None,
        lease_seconds: float,
    ) -> Agent:
        """A new agent the town should start, with `bead` claimed for it (no credentials until it launches)."""
        meta = {**metadata, "desired": RUNNING, "generation": 0, **({"hook": bead} if bead else {})}
        with self.db.write() as tx:
            self.agents._insert(tx, actor, name, role, rig, meta, None, {"hook": bead})
            if bead is not None:
                self.beads._claim(tx, name, bead, lease_seconds)
        return self._get(name)

    def pending(self) -> list[Agent]:
        """Agents waiting to be started, oldest first."""
        found = self.db.query(
            "SELECT * FROM agents WHERE state='requested' AND json_extract(metadata, '$.desired')=? "
            "ORDER BY created_at, name",
            (RUNNING,),
        )
        return [rows.agent(r) for r in found]

    def begin(self, actor: str, name: str) -> Agent | None:
        """requested -> starting, one more generation; None when it is no longer waiting (someone else began)."""
        with self.db.write() as tx:
            row = tx.execute(
                "SELECT * FROM agents WHERE name=? AND state='requested' AND json_extract(metadata, '$.desired')=?",
                (name, RUNNING),
            ).fetchone()
            if row is None:
                return None
            meta = rows.loads(row["metadata"]) or {}
            meta["generation"] = int(meta.get("generation") or 0) + 1
            tx.execute("UPDATE agents SET state='starting', metadata=? WHERE name=?", (json.dumps(meta), name))
            tx.event(
                actor,
                Verb.agent_starting,
                agent=name,
                before={"state": "requested"},
                after={"state": "starting", "generation": meta["generation"]},
            )
        return self._get(name)

    def want_stopped(self, actor: str, name: str, reason: str) -> Agent:
        """Record that an agent should stop; the reconciler stops its container and gives its beads back."""
        with self.db.write() as tx:
            row = tx.execute("SELECT * FROM agents WHERE name=?", (name,)).fetchone()
            meta = {**(rows.loads(row["metadata"]) or {}), "desired": STOPPED, "stop_reason": reason}
            tx.execute("UPDATE agents SET metadata=? WHERE name=?", (json.dumps(meta), name))
            tx.event(actor, Verb.agent_stop_requested, agent=name, after={"reason": reason})
        return self._get(name)

    def to_stop(self) -> list[Agent]:
        """Agents asked to stop that are still alive or waiting to start."""
        found = self.db.query(
            f"SELECT * FROM agents WHERE state IN ({','.join('?' * (len(ALIVE) + 1))}) "
            "AND json_extract(metadata, '$.desired')=? ORDER BY name",
            (*ALIVE, AgentState.requested.value, STOPPED),
        )
        return [rows.agent(r) for r in found]

    def _get(self, name: str) -> Agent:
        row = self.db.query_one("SELECT * FROM agents WHERE name=?", (name,))
        assert row is not None
        return rows.agent(row)
