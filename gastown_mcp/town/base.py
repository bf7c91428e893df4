"""What every noun of the town shares: the private store, the settings, and lease renewal.

Each noun module (`beads`, `mail`, `agents`, `fleet`, `budgets`, `feed`) adds its methods to `Town` through a
class built on `TownBase`; only these classes ever hold the store or (in `fleet`) the runtime.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from gastown_mcp.config import Settings
from gastown_mcp.models import Agent, AgentState, Role, now_iso
from gastown_mcp.store import Store
from gastown_mcp.store.db import Deferred, WriteLockTaken
from gastown_mcp.town import guard

if TYPE_CHECKING:
    from gastown_mcp.town.traces import Traces

OPERATOR = guard.OPERATOR


def operator() -> Agent:
    """The human at the CLI: acts with overseer rights, is not an agent row."""
    return Agent(name=OPERATOR, role=Role.overseer, state=AgentState.running, created_at=now_iso())


def system_agent(name: str, role: Role) -> Agent:
    """A deterministic supervisor (witness, dogs) acting in the town under its role; not an agent row."""
    return Agent(name=name, role=role, state=AgentState.running, created_at=now_iso())


class NeedsThread(WriteLockTaken):
    """A call made from an event loop (`Town.deferred_writes`) reached slow work (git, containers) before it
    changed anything: run it again on a worker thread."""


class Caller(NamedTuple):
    """Who is calling, and whether a nudge waits for it (it rides on this call's result)."""

    agent: Agent
    nudged: bool


class IdentityCache:
    """Token (or name) -> agent, valid for one identity epoch. Every change to an agent row bumps the epoch in
    the change's own transaction, from any process, and every call reads the epoch first: a revoked, removed or
    stopped agent is refused on its very next call, while an unchanged one costs one indexed read."""

    def __init__(self) -> None:
        self.epoch = -1
        self.agents: dict[str, Agent] = {}
        self.lock = threading.Lock()

    def at(self, epoch: int) -> dict[str, Agent]:
        """The entries valid at `epoch` (a fresh, empty map when it moved on)."""
        with self.lock:
            if epoch != self.epoch:
                self.epoch, self.agents = epoch, {}
            return self.agents


class TownBase:
    traces: Traces | None = None  # spans of bead runs, only with `[otel] endpoint` (see town/traces.py)

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self.settings = settings
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()
        self._queue_lock = threading.Lock()  # a polecat's limits are checked and applied as one step
        self._identity = IdentityCache()

    def close(self) -> None:
        """Close the town's database connections (the process is done with this town)."""
        if self.traces is not None:
            self.traces.tracing.close()  # sends the spans still queued
        self._store.close()

    @contextlib.contextmanager
    def deferred_writes(self) -> Iterator[Deferred]:
        """Run town calls on an event loop: store work only, no wait for the write lock on the first write
        (`WriteLockTaken` / `NeedsThread`: nothing changed, run the call on a worker thread instead) and no
        journal sync. Whoever reports the outcome first makes it durable with `make_durable(block.end)`."""
        with self._store.db.deferred() as block:
            yield block

    def make_durable(self, end: int) -> None:
        """Return once every write of a `deferred_writes` block up to journal offset `end` is on disk."""
        self._store.db.durable(end)

    def _off_loop(self, what: str) -> None:
        """Slow work (git, containers) is not for an event loop: refuse it there, before anything changed."""
        if self._store.db.deferring():
            raise NeedsThread(f"{what} runs on a worker thread")

    def _require(self, actor: Agent, action: str, what: str) -> None:
        guard.require(actor, action, what)
        self._touch(actor)

    def _own_only(self, actor: Agent, action: str, verb: str, bead_id: str) -> bool:
        own = guard.own_only(actor, action, verb, bead_id)
        self._touch(actor)
        return own

    def _touch(self, actor: Agent) -> None:
        """Renew the caller's leases and last_seen, at most every few seconds per agent."""
        if actor.name == OPERATOR:
            return
        lease = self.settings.lease.seconds
        now = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(actor.name)
            if last is not None and now - last < min(5.0, lease / 20):
                return
            self._touched[actor.name] = now
        self._store.agents.touch(actor.name, lease)
