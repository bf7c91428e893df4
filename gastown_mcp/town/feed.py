"""The audit trail in the town API: events after a cursor, the latest ones, and the JSONL export.

Every state change writes an event in the same transaction (see `models.Verb` for the vocabulary); readers
page through them by id, which is how the CLI feed, the witness and future dashboards follow the town.
"""

from __future__ import annotations

from typing import IO, Protocol

from gastown_mcp.models import Agent, Event
from gastown_mcp.town.base import TownBase


class EventSource(Protocol):
    """What a follower of the audit trail needs: events after a cursor (`Town.events` fits it)."""

    def __call__(
        self, *, after_id: int = 0, bead_id: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[Event]: ...


class FeedAPI(TownBase):
    def events(
        self,
        actor: Agent,
        *,
        after_id: int = 0,
        bead_id: str | None = None,
        agent: str | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Events after `after_id`, oldest first, optionally about one bead or agent."""
        self._require(actor, "town.status", "read the audit trail")
        return self._store.events.since(after_id=after_id, bead_id=bead_id, agent=agent, limit=max(1, limit))

    def recent_events(self, actor: Agent, limit: int) -> list[Event]:
        """The last `limit` events, oldest first."""
        self._require(actor, "town.status", "read the audit trail")
        return self._store.events.tail(max(1, limit))

    def last_event_id(self, actor: Agent) -> int:
        self._require(actor, "town.status", "read the audit trail")
        return self._store.events.last_id()

    def export(self, actor: Agent, out: IO[str]) -> dict[str, int]:
        """Every bead, label, dependency, comment and event as JSONL; returns the count per table."""
        self._require(actor, "town.admin", "export the town")
        return self._store.events.export(out)
