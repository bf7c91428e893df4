"""The town's spans of a bead run (see `gastown_mcp/telemetry.py`): claim, model calls, tool calls, complete,
landing on main, and the run's root span with the tokens and USD it spent.

A model or tool call counts for the bead its agent last claimed (the same attribution as `gastown usage --by
bead`), so every metered request is on some bead's trace when one was claimed. Held by `Town.traces` only
when `[otel] endpoint` is set; every hook is skipped with one attribute test otherwise.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from gastown_mcp.models import Agent, MergeRequest
from gastown_mcp.store import Store
from gastown_mcp.store.overview import OverviewRepo
from gastown_mcp.telemetry import Tracing, now_ns

if TYPE_CHECKING:
    from gastown_mcp.store.usage import UsageRow

ISO = "%Y-%m-%dT%H:%M:%S.%fZ"
log = logging.getLogger("gastown_mcp.telemetry")
F = TypeVar("F", bound=Callable[..., None])


def _never_raises(fn: F) -> F:
    """A span that cannot be made is logged, never turned into a failed claim, tool call or model call."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            log.warning("telemetry: %s failed: %s", fn.__name__, exc, exc_info=True)

    return guarded  # type: ignore[return-value]


def _ns(iso: str | None, default: int) -> int:
    if not iso:
        return default
    return int(datetime.strptime(iso + "+0000", ISO + "%z").timestamp() * 1e9)


class Traces:
    def __init__(self, tracing: Tracing, store: Store) -> None:
        self.tracing = tracing
        self._store = store
        self._repo = OverviewRepo(store.db)

    def _who(self, agent: Agent) -> dict[str, Any]:
        return {"gastown.agent": agent.name, "gastown.role": agent.role.value, "gastown.rig": agent.rig or ""}

    @_never_raises
    def claimed(self, agent: Agent, bead_id: str, start_ns: int) -> None:
        attrs = {**self._who(agent), "gastown.bead_id": bead_id}
        self.tracing.span("bead.claim", bead_id, agent.name, start_ns, now_ns(), attrs)

    @_never_raises
    def completed(self, agent: Agent, bead_id: str, start_ns: int, error: str | None = None) -> None:
        attrs = {**self._who(agent), "gastown.bead_id": bead_id}
        self.tracing.span("bead.complete", bead_id, agent.name, start_ns, now_ns(), attrs, error=error)

    @_never_raises
    def tool_call(self, agent: Agent, tool: str, start_ns: int, error: str | None = None) -> None:
        bead = self._repo.last_claim(agent.name)
        attrs = {**self._who(agent), "gastown.bead_id": bead or "", "mcp.tool.name": tool}
        self.tracing.span(f"tool {tool}", bead, agent.name, start_ns, now_ns(), attrs, error=error)

    @_never_raises
    def model_call(self, row: UsageRow) -> None:
        """A metered model request (the gateway's `on_settled`): its tokens and USD, on its bead's trace."""
        end = now_ns()
        bead = self._repo.last_claim(row.agent)
        agent = self._store.agents.find(row.agent)
        attrs = {
            "gastown.agent": row.agent,
            "gastown.role": agent.role.value if agent else "",
            "gastown.rig": row.rig or "",
            "gastown.bead_id": bead or "",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": row.model,
            "gen_ai.usage.input_tokens": row.input_tokens,
            "gen_ai.usage.output_tokens": row.output_tokens,
            "gastown.tokens": row.tokens,
            "gastown.tokens.cache_creation": row.cache_creation_tokens,
            "gastown.tokens.cache_read": row.cache_read_tokens,
            "gastown.cost_usd": row.cost_usd,
            "gastown.upstream": row.upstream,
            "gastown.outcome": row.outcome,
            "http.response.status_code": row.status,
        }
        error = row.error if row.outcome == "error" else None
        self.tracing.span("model.call", bead, row.agent, end - int(row.duration_ms * 1e6), end, attrs, error=error)

    @_never_raises
    def landed(self, rig: str, requests: Sequence[MergeRequest], commit: str) -> None:
        """Each request's landing on main (from when it went into testing), then its run's root span."""
        end = now_ns()
        for r in requests:
            start = _ns(self._repo.testing_since(r.bead_id), end)
            attrs = {
                "gastown.bead_id": r.bead_id,
                "gastown.agent": r.agent,
                "gastown.rig": rig,
                "gastown.merge_request": r.id,
                "gastown.commit": commit,
            }
            self.tracing.span("merge.land", r.bead_id, r.agent, start, end, attrs)
            self.run_ended(r.bead_id, r.agent, rig, "merged", end)

    @_never_raises
    def run_lost(self, bead_id: str, agent: str, outcome: str) -> None:
        """A run that ends without landing (released, blocked, cancelled, handed back): its root span all the
        same, with what it spent and how it ended."""
        found = self._store.agents.find(agent)
        self.run_ended(bead_id, agent, found.rig if found else None, outcome)

    def run_ended(self, bead_id: str, agent: str, rig: str | None, outcome: str, end: int | None = None) -> None:
        end = end or now_ns()
        spend = self._repo.run_spend(bead_id, agent)
        attrs = {
            "gastown.bead_id": bead_id,
            "gastown.agent": agent,
            "gastown.rig": rig or "",
            "gastown.outcome": outcome,
            "gastown.model_requests": int(spend.get("requests") or 0),
            "gastown.tokens": int(spend.get("tokens") or 0),
            "gen_ai.usage.input_tokens": int(spend.get("input_tokens") or 0),
            "gen_ai.usage.output_tokens": int(spend.get("output_tokens") or 0),
            "gastown.tokens.cache_creation": int(spend.get("cache_creation_tokens") or 0),
            "gastown.tokens.cache_read": int(spend.get("cache_read_tokens") or 0),
            "gastown.cost_usd": float(spend.get("cost_usd") or 0.0),
        }
        self.tracing.run(bead_id, agent, _ns(spend.get("claimed_at"), end), end, attrs)
