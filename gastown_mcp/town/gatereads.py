"""The reads a gateway makes on every request (the caller's agent by its virtual key, the emergency stop, the
route), kept per thread and dropped the moment the store could answer any of them differently.

The check is exact and costs one `PRAGMA data_version` a request (made with its key) on the thread's no-wait
write connection: it changes whenever any other connection commits (another thread, the CLI, another process
revoking a key, stopping the town, setting a route), and that connection's own writes show in its
`total_changes`. The gateway's own writes (reservations, usage rows, budget totals, their events) change nothing
kept here, so after one of them the gateway re-blesses the cache (`wrote`) instead of dropping it; only a change
made in between by nothing else on that connection is forgiven, so nothing else slips through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gastown_mcp.errors import StoreError
from gastown_mcp.models import Agent
from gastown_mcp.store.db import Database

MAX_KEPT = 1024  # entries per thread before the cache starts over (keys and routes come from requests)

_STOP = ("stop",)


class GatewayReads:
    def __init__(
        self,
        db: Database,
        agent_by_key: Callable[[str], Agent],
        frozen: Callable[[], dict[str, Any] | None],
        pick: Callable[[str, str], str | None],
    ) -> None:
        self.db = db
        self._agent_by_key, self._frozen, self._pick = agent_by_key, frozen, pick
        self._local = threading.local()

    def agent(self, key: str) -> Agent:
        """The agent a virtual key belongs to (`Unauthorized` for an unknown or revoked key, never kept)."""
        kept = self._fresh()
        agent: Agent | None = kept.get(key)
        if agent is None:
            agent = kept[key] = self._agent_by_key(key)
        return agent

    def admission(self, agent: str, model: str) -> tuple[dict[str, Any] | None, str | None]:
        """The emergency stop in force (or None) and the upstream name for this agent and model, as of this
        thread's latest check: the one its request's `agent` call made, or a later request's (one check a request,
        at its key; a change made while a body is read is seen by the next request, as one made a moment after
        an admission always was). A thread that never checked checks now."""
        kept = self._local.__dict__.get("kept")
        if kept is None:
            kept = self._fresh()
        if _STOP not in kept:
            kept[_STOP] = self._frozen()
        route = (agent, model)
        if route not in kept:
            kept[route] = self._pick(agent, model)
        return kept[_STOP], kept[route]

    def mark(self) -> int:
        """Taken just before one of the gateway's own no-wait writes; hand it to `wrote` once it committed."""
        return self.db.nowait_changes()

    def wrote(self, mark: int) -> None:
        """The gateway's own no-wait write (reservation or settlement) committed on this thread: it changed none
        of what is kept, so the cache stays valid if nothing else changed it since `mark`."""
        state = self._local.__dict__
        version = state.get("version")
        if version is not None and version[1] == mark:
            state["version"] = (version[0], self.db.nowait_changes())

    def _fresh(self) -> dict[Any, Any]:
        state = self._local.__dict__
        try:
            version: tuple[int, int] | None = self.db.nowait_version()
        except StoreError:  # unknown: keep nothing, and let the reads themselves fail (or wait) as they do
            version = None
        kept: dict[Any, Any] | None = state.get("kept")
        if version is None or kept is None or state.get("version") != version or len(kept) >= MAX_KEPT:
            kept = state["kept"] = {}
            state["version"] = version
        return kept
