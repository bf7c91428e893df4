"""Budgets and usage: token/USD limits per agent, rig and town, reserve-then-settle admission, price table.

An agent spends from its own budget, its rig's and the town's; a scope without a budget row is unlimited.
Overspend bound: a request is admitted only while spent + live reservations < limit in every scope, and it
reserves an upper bound of what it can consume (body bytes + max_tokens), so the final spend of any scope
stays below its limit plus the largest single reservation, however many requests run at once. Every admitted
request writes its reservation (tagged with the gateway instance that owns it), so a store that cannot be
written refuses work before it is forwarded. A reservation is settled (released, its usage row written) before
the response's last byte; one that a dead gateway left behind is charged in full by the next gateway's start,
so a response a client received (a stream's text goes out before its end) is metered even if the gateway died
before its usage row.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

from pydantic import Field

from gastown_mcp.config import Price
from gastown_mcp.errors import BudgetBusy, BudgetExceeded, InvalidInput
from gastown_mcp.models import Agent, StrictModel, Verb, now_iso
from gastown_mcp.store import health
from gastown_mcp.store.db import Database, Tx, WriteLockTaken
from gastown_mcp.store.usage import TOWN, BudgetKey, UsageRepo, UsageRow
from gastown_mcp.town import glance
from gastown_mcp.town.agents import AgentsAPI
from gastown_mcp.town.gatereads import GatewayReads
from gastown_mcp.town.glance import budget_fields, failing_fields, spend_fields, usage_fields
from gastown_mcp.town.routes import Route, Routes

BudgetRow = sqlite3.Row | Mapping[str, Any]  # as read, or as `UsageRepo.add_spent` left it

__all__ = ["Price", "Route", "Routes", "UsageRow", "WriteLockTaken", "spend_fields"]

GATEWAY_ACTOR = "gateway"


class HasDatabase(Protocol):
    """A `Store` (or anything holding the town `Database`)."""

    @property
    def db(self) -> Database: ...


class Scope(StrEnum):
    agent = "agent"
    rig = "rig"
    town = "town"


_Model = StrictModel


def default_prices() -> dict[str, Price]:
    """Public list prices by model family (first matching glob wins); the stand-in is priced like Sonnet."""
    return {
        "scripted-standin*": Price(input=3, output=15),
        "claude-opus-4-[5-9]*": Price(input=5, output=25),
        "claude-opus-*": Price(input=15, output=75),
        "claude-3-opus*": Price(input=15, output=75),
        "claude-*sonnet*": Price(input=3, output=15),
        "claude-haiku-4*": Price(input=1, output=5),
        "claude-3-5-haiku*": Price(input=0.8, output=4),
        "claude-3-haiku*": Price(input=0.25, output=1.25),
        "*": Price(input=3, output=15),
    }


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens


class PriceTable:
    """Globs over model ids → `Price`; overrides are tried before the defaults."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.rules: list[tuple[str, Price]] = [*(overrides or {}).items(), *default_prices().items()]
        self._by_model: dict[str, Price] = {}  # the rules are fixed: each model's price is looked up once

    def price(self, model: str) -> Price:
        known = self._by_model.get(model)
        if known is not None:
            return known
        found = next((price for pattern, price in self.rules if fnmatch.fnmatchcase(model, pattern)), None)
        found = found or Price(input=0, output=0)
        if len(self._by_model) < 1024:  # model ids come from requests: bound what is kept
            self._by_model[model] = found
        return found

    def cost(self, model: str, usage: Usage, price: Price | None = None) -> float:
        p = price or self.price(model)
        return (
            usage.input_tokens * p.input
            + usage.output_tokens * p.output
            + usage.cache_creation_tokens * p.write
            + usage.cache_read_tokens * p.read
        ) / 1e6

    def estimate(self, model: str, input_tokens_max: int, max_tokens: int, price: Price | None = None) -> Estimate:
        """An upper bound: every input token at the dearer of input and cache-write prices (`price` replaces the
        table's, e.g. an upstream's own)."""
        p = price or self.price(model)
        usd = (input_tokens_max * max(p.input, p.write) + max_tokens * p.output) / 1e6
        return Estimate(tokens=input_tokens_max + max_tokens, usd=usd)


class Estimate(_Model):
    tokens: int = Field(ge=0)
    usd: float = Field(ge=0)


class Reservation(_Model):
    id: int | None = Field(description="the reservation row; None for a refusal, which reserves nothing")
    agent: str
    rig: str | None
    model: str
    tokens: int
    usd: float
    created: float = Field(default_factory=time.monotonic)


class BudgetStatus(_Model):
    scope: Scope
    name: str
    token_limit: int | None
    usd_limit: float | None
    tokens_spent: int
    usd_spent: float
    tokens_remaining: int | None
    usd_remaining: float | None
    exhausted: bool
    exhausted_at: str | None = None
    updated_at: str
    updated_by: str
    reserved_tokens: int = Field(default=0, description="held by requests in flight, not yet settled")
    reserved_usd: float = 0.0


class AgentUsage(_Model):
    agent: str
    rig: str | None
    requests: int
    refused: int
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_usd: float
    tokens_remaining: int | None = Field(description="least remaining over agent, rig and town; None = no limit")
    usd_remaining: float | None
    last_at: str | None = None
    upstreams: list[str] = Field(default_factory=list, description="the upstreams that served its requests")


class ModelError(_Model):
    """An agent whose latest model calls failed, none succeeding since: what `agent ls` and the witness show."""

    agent: str
    failures: int = Field(description="failed calls in a row")
    first_id: int = Field(description="usage row of the first failure in the row: identifies the streak")
    status: int
    upstream: str
    model: str
    error: str
    at: str


def keys_for(agent: str, rig: str | None) -> list[BudgetKey]:
    return glance.keys_for(agent, rig)


def _status(row: sqlite3.Row, reserved: tuple[int, float] = (0, 0.0)) -> BudgetStatus:
    return BudgetStatus(**budget_fields(row, reserved))


class Budgets:
    """The budget/usage API the gateway and the town call. Permission checks belong to the caller."""

    def __init__(self, store: HasDatabase, prices: PriceTable | None = None) -> None:
        self.db = store.db
        self.repo = UsageRepo(store.db)
        self.prices = prices or PriceTable()

    # -- operator surface --------------------------------------------------------------------------
    def set(
        self,
        actor: str,
        scope: Scope | str,
        name: str | None = None,
        *,
        tokens: int | None = None,
        usd: float | None = None,
    ) -> BudgetStatus:
        """Set (or replace) a scope's limits; spending already recorded for the scope counts against it."""
        scope, name = _scope_name(scope, name)
        if tokens is None and usd is None:
            raise InvalidInput("give a token limit, a USD limit or both; use clear to remove a budget")
        if (tokens is not None and tokens < 0) or (usd is not None and usd < 0):
            raise InvalidInput("budget limits must be zero or more")
        with self.db.write() as tx:
            before = self.repo.upsert_budget(tx, scope, name, tokens, usd, actor)
            after = {"scope": scope, "name": name, "token_limit": tokens, "usd_limit": usd}
            tx.event(
                actor,
                Verb.budget_set,
                agent=name if scope == "agent" else None,
                before=dict(before) if before is not None else None,
                after=after,
            )
        return self.show(scope, name)[0]

    def clear(self, actor: str, scope: Scope | str, name: str | None = None) -> None:
        scope, name = _scope_name(scope, name)
        with self.db.write() as tx:
            before = self.repo.delete_budget(tx, scope, name)
            if before is not None:
                tx.event(actor, Verb.budget_cleared, agent=name if scope == "agent" else None, before=dict(before))

    def show(self, scope: Scope | str | None = None, name: str | None = None) -> list[BudgetStatus]:
        if scope is not None:
            scope, name = _scope_name(scope, name) if name is not None or scope == "town" else (scope, None)
        return [self._with_reserved(r) for r in self.repo.list_budgets(None if scope is None else str(scope), name)]

    def applying_to(self, agent: str, rig: str | None) -> list[BudgetStatus]:
        """The budgets an agent spends from (its own, its rig's, the town's) that exist."""
        return [self._with_reserved(r) for r in self.repo.budgets(self.db.conn, keys_for(agent, rig))]

    def _with_reserved(self, row: sqlite3.Row) -> BudgetStatus:
        return _status(row, self.repo.reserved_so_far(self.db.conn, row["scope"], row["name"]))

    def usage(self, agent: str | None = None) -> list[AgentUsage]:
        """Per agent: requests, tokens by kind, USD, and the least remaining over its budgets."""
        return [
            AgentUsage(**usage_fields(r, [b.model_dump() for b in self.applying_to(r["agent"], r["rig"])]))
            for r in self.repo.totals_by_agent(agent)
        ]

    def failing(self, agent: str | None = None) -> list[ModelError]:
        """Agents whose latest model calls failed with no success since, with the latest error."""
        return [ModelError(**failing_fields(r)) for r in self.repo.failing(agent)]

    # -- gateway surface ---------------------------------------------------------------------------
    def reserve(
        self,
        agent: str,
        rig: str | None,
        model: str,
        estimate: Estimate,
        owner: str | None = None,
        *,
        refused_status: int | None = None,
        sync: bool = True,
        wait: bool = True,
    ) -> Reservation:
        """Admit a request or raise: `BudgetExceeded` when a scope is spent, `BudgetBusy` when reserved,
        `StoreError` when the reservation cannot be written. `owner` is the gateway instance making it.
        With `refused_status`, a request refused because a budget is spent is recorded (as by `refused`) in
        the same transaction, which commits (the budget marked spent with it) before this raises.
        `sync` and `wait` are the store's (`Database.write`): an event loop passes `wait=False` and gets
        `WriteLockTaken`, nothing changed, when another writer holds the lock.

        The reservation is written even when no budget applies: it is the admission write that proves usage
        can be recorded (a full disk refuses here, before anything is forwarded), and it shows in flight."""
        refusal: BudgetExceeded | None = None
        with self.db.write(sync=sync, wait=wait) as tx:
            try:
                rid = self._admit(tx, agent, rig, model, estimate, owner)
            except BudgetExceeded as exc:  # commit the refusal (and the budget marked spent), then refuse
                refusal = exc
                if refused_status is not None and not isinstance(exc, BudgetBusy):
                    none = Reservation(id=None, agent=agent, rig=rig, model=model, tokens=0, usd=0.0)
                    self._record(tx, self.usage_row(none, Usage(), status=refused_status, outcome="refused"))
        if refusal is not None:
            raise refusal
        return Reservation(id=rid, agent=agent, rig=rig, model=model, tokens=estimate.tokens, usd=estimate.usd)

    def _admit(self, tx: Tx, agent: str, rig: str | None, model: str, estimate: Estimate, owner: str | None) -> int:
        for row in self.repo.budgets_reserved(tx, keys_for(agent, rig)):
            tl, ul = row["token_limit"], row["usd_limit"]
            label = _label(row)
            if (tl is not None and row["tokens_spent"] >= tl) or (ul is not None and row["usd_spent"] >= ul):
                self._exhausted(tx, row, agent)
                raise BudgetExceeded(
                    f"{label} budget is spent ({_spent_text(row)}); the gateway refuses further model "
                    "requests until the operator raises it with `gastown budget set`"
                )
            rt, ru = row["reserved_tokens"], row["reserved_usd"]
            if (tl is not None and row["tokens_spent"] + rt >= tl) or (ul is not None and row["usd_spent"] + ru >= ul):
                raise BudgetBusy(
                    f"{label} budget is fully reserved by requests in flight ({_spent_text(row)}); "
                    "retry when they finish"
                )
        return self.repo.add_reservation(tx, agent, rig, model, estimate.tokens, estimate.usd, owner)

    def settle(
        self,
        reservation: Reservation,
        usage: Usage,
        *,
        sync: bool = True,
        wait: bool = True,
        **row: Any,
    ) -> UsageRow:
        """Release the reservation, record one usage row, and add the actual spend to every scope (`row`: the
        keywords of `usage_row`; `sync` and `wait` as for `reserve`)."""
        made = self.usage_row(reservation, usage, **row)
        self.settle_rows([(reservation, made)], sync=sync, wait=wait)
        return made

    def usage_row(
        self,
        reservation: Reservation,
        usage: Usage,
        *,
        model: str | None = None,
        upstream: str = "",
        status: int = 200,
        outcome: str = "ok",
        duration_ms: float = 0.0,
        stream: bool = False,
        request_id: str | None = None,
        price: Price | None = None,
        error: str | None = None,
    ) -> UsageRow:
        """The usage row that settles `reservation` (`price` replaces the table's: an upstream's own; `error`
        says why a failed request failed). Nothing is written."""
        model = model or reservation.model
        return UsageRow(
            agent=reservation.agent,
            rig=reservation.rig,
            model=model,
            upstream=upstream,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cost_usd=self.prices.cost(model, usage, price),
            duration_ms=duration_ms,
            status=status,
            outcome=outcome,
            stream=stream,
            request_id=request_id,
            error=error[:500] if error else None,
        )

    def settle_rows(
        self, settled: Sequence[tuple[Reservation, UsageRow]], *, sync: bool = True, wait: bool = True
    ) -> None:
        """Settle finished requests, (reservation, usage row) pairs, in one transaction."""
        with self.db.write(sync=sync, wait=wait) as tx:
            for reservation, row in settled:
                self._settle(tx, reservation, row)

    def _settle(self, tx: Tx, reservation: Reservation, row: UsageRow) -> None:
        if reservation.id is not None:
            self.repo.take_reservation(tx, reservation.id)
        self._record(tx, row)

    def _record(self, tx: Tx, row: UsageRow) -> None:
        """Write a usage row and add its spend to every scope it counts in, stamping those it exhausts."""
        keys = keys_for(row.agent, row.rig)
        self.repo.insert_usage(tx, row)
        if row.tokens or row.cost_usd:
            for b in self.repo.add_spent(tx, keys, row.tokens, row.cost_usd):
                tl, ul = b["token_limit"], b["usd_limit"]
                if (tl is not None and b["tokens_spent"] >= tl) or (ul is not None and b["usd_spent"] >= ul):
                    self._exhausted(tx, b, row.agent)

    def sync(self) -> None:
        """Make the writes made with `sync=False` durable against power loss (one fdatasync)."""
        self.db.sync()

    def autocheckpoint(self, on: bool) -> None:
        """Whether the calling thread's writes checkpoint the WAL themselves (`Database.autocheckpoint`): an
        event loop turns it off and calls `checkpoint` from another thread."""
        self.db.autocheckpoint(on)

    def checkpoint(self) -> None:
        """A WAL checkpoint from the calling thread: PASSIVE, then RESTART if writers starved it
        (`Database.checkpoint`)."""
        self.db.checkpoint()

    def refused(
        self,
        agent: str,
        rig: str | None,
        model: str,
        status: int,
        stream: bool = False,
        *,
        outcome: str = "refused",
        upstream: str = "",
        error: str | None = None,
        sync: bool = True,
        wait: bool = True,
    ) -> None:
        """Record a refused request (zero tokens) so usage reports show how often an agent hit its limit, or
        (`outcome="error"`) a request the gateway could not send on, with why."""
        res = Reservation(id=None, agent=agent, rig=rig, model=model, tokens=0, usd=0.0)
        self.settle(
            res, Usage(), status=status, outcome=outcome, stream=stream, upstream=upstream, error=error,
            sync=sync, wait=wait,
        )  # fmt: skip

    def settle_leftovers(self, owner: str) -> list[UsageRow]:
        """Charge in full every reservation not made by gateway instance `owner` (run at gateway start: the town
        process is the only gateway, so anything else was left by one that died mid-request, perhaps after its
        client had the whole response). Its actual usage was never recorded, so each becomes a usage row (outcome
        `abandoned`, its error saying why) for the reservation itself: the upper bound of what it could cost."""
        out = []
        with self.db.write() as tx:
            for r in self.repo.reservations_not_owned_by(tx, owner):
                self.repo.take_reservation(tx, r["id"])
                row = UsageRow(
                    agent=r["agent"],
                    rig=r["rig"],
                    model=r["model"],
                    upstream="",
                    input_tokens=r["tokens"],  # the kinds are unknown: the bound is body bytes + max_tokens
                    output_tokens=0,
                    cache_creation_tokens=0,
                    cache_read_tokens=0,
                    cost_usd=r["usd"],
                    duration_ms=0.0,
                    status=0,
                    outcome="abandoned",
                    stream=False,
                    error=(
                        f"the gateway stopped before this request's usage was recorded (reserved {r['created_at']}); "
                        f"charged its whole reservation: {r['tokens']:,} tokens, ${r['usd']:.6f}"
                    ),
                )
                self._record(tx, row)
                out.append(row)
        return out

    def release_stale(self, older_than_seconds: float) -> int:
        """Drop reservations left by a crashed process (run at gateway start)."""
        cutoff = now_iso(time.time() - older_than_seconds)
        with self.db.write() as tx:
            stale = self.repo.stale_reservations(tx, cutoff)
            for r in stale:
                self.repo.take_reservation(tx, r["id"])
        return len(stale)

    def _exhausted(self, tx: Tx, row: BudgetRow, agent: str) -> None:
        if self.repo.mark_exhausted(tx, row["scope"], row["name"]):
            tx.event(
                GATEWAY_ACTOR,
                Verb.budget_exhausted,
                agent=agent,
                after={
                    "scope": row["scope"],
                    "name": row["name"],
                    "token_limit": row["token_limit"],
                    "usd_limit": row["usd_limit"],
                    "tokens_spent": row["tokens_spent"],
                    "usd_spent": row["usd_spent"],
                },
            )


def _scope_name(scope: Scope | str, name: str | None) -> tuple[str, str]:
    try:
        s = Scope(scope)
    except ValueError as exc:
        raise InvalidInput(f"budget scope must be agent, rig or town, not {scope!r}") from exc
    if s is Scope.town:
        return s.value, TOWN
    if not name:
        raise InvalidInput(f"a {s.value} budget needs the {s.value}'s name")
    return s.value, name


def _label(row: BudgetRow) -> str:
    return "the town" if row["scope"] == "town" else f"{row['scope']} {row['name']!r}"


def _spent_text(row: BudgetRow) -> str:
    parts = []
    if row["token_limit"] is not None:
        parts.append(f"{row['tokens_spent']:,} of {row['token_limit']:,} tokens")
    if row["usd_limit"] is not None:
        parts.append(f"${row['usd_spent']:.4f} of ${row['usd_limit']:.2f}")
    return ", ".join(parts)


class BudgetsAPI(AgentsAPI):
    """Budgets and usage on `Town`: the operator and mayor read and set them; the gateway spends through
    `town.budgets` (reserve, settle) and picks upstreams through `town.routes`, one instance of each, and makes
    its per-request reads (key, stop, route) through `town.gateway_reads`."""

    budgets: Budgets
    routes: Routes
    gateway_reads: GatewayReads

    def _init_budgets(self) -> None:
        gateway = self.settings.gateway
        self.budgets = Budgets(self._store, PriceTable(gateway.prices))
        self.routes = Routes(self._store, gateway.routes, gateway.default_upstream)
        self.gateway_reads = GatewayReads(
            self._store.db, self.gateway_agent, lambda: self._store.health.get(health.ESTOP), self.routes.pick
        )

    def budget_set(
        self, actor: Agent, scope: str, name: str | None = None, *, tokens: int | None = None, usd: float | None = None
    ) -> BudgetStatus:
        self._require(actor, "town.budget.set", "set budgets")
        if scope == "agent" and name:
            self.agent(name)
        return self.budgets.set(actor.name, scope, name, tokens=tokens, usd=usd)

    def budget_clear(self, actor: Agent, scope: str, name: str | None = None) -> None:
        self._require(actor, "town.budget.set", "clear budgets")
        self.budgets.clear(actor.name, scope, name)

    def budget(self, actor: Agent, scope: str | None = None, name: str | None = None) -> list[BudgetStatus]:
        self._require(actor, "town.budget", "read budgets")
        return self.budgets.show(scope, name)

    def usage(self, actor: Agent, agent: str | None = None) -> list[AgentUsage]:
        self._require(actor, "town.usage", "read usage")
        return self.budgets.usage(agent)

    def model_errors(self, actor: Agent, agent: str | None = None) -> list[ModelError]:
        """Agents whose latest model calls failed, none succeeding since, with the latest error."""
        self._require(actor, "town.usage", "read usage")
        return self.budgets.failing(agent)

    def dispatch_room(self, actor: Agent, rig: str) -> str | None:
        """Why no new polecat should start on `rig` now (the town's or the rig's budget cannot cover one model
        request's reservation), or None when there is room."""
        self._require(actor, "town.budget", "read budgets")
        need = self.settings.gateway.max_tokens_by_role.get("polecat", self.settings.gateway.max_tokens_limit)
        for status in self.budgets.applying_to(f"dispatch of {rig}", rig):
            if status.scope is Scope.agent:
                continue
            label = "the town" if status.scope is Scope.town else f"rig {status.name}"
            if status.exhausted:
                return f"{label}'s budget is spent"
            if status.tokens_remaining is not None and status.tokens_remaining - status.reserved_tokens < need:
                return f"{label}'s budget has fewer than {need:,} tokens left (one polecat request's reservation)"
            if status.usd_remaining is not None and status.usd_remaining - status.reserved_usd <= 0:
                return f"{label}'s USD budget is reserved by requests in flight"
        return None

    def spent_budgets(self, actor: Agent, agent: Agent) -> list[BudgetStatus]:
        """The exhausted budgets among those an agent spends from (its own, its rig's, the town's)."""
        self._require(actor, "town.budget", "read budgets")
        return [b for b in self.budgets.applying_to(agent.name, agent.rig) if b.exhausted]
