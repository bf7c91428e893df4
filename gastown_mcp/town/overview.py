"""The operator's overview in the town API: the bead board, what needs a human, a bead's whole story, agents with
their spend, spend by bead/convoy/role/rig and over time, the figures behind `/metrics`, and the operator's
dashboard login. Reads only (the login token aside); the dashboard's actions call the ordinary town methods.

Every method checks its caller like any other town method, so the dashboard (acting as the operator) and the
CLI get the same answers; the SQL is in `store/overview.py`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from gastown_mcp import rigs
from gastown_mcp.errors import GastownError, InvalidInput, Unauthorized
from gastown_mcp.models import Agent, Bead, BeadStatus, BeadType, Event, MergeRequest, Message, Role, now_iso
from gastown_mcp.store import rows
from gastown_mcp.store.overview import COLUMNS, BoardFilter, OverviewRepo
from gastown_mcp.telemetry import Tracing
from gastown_mcp.town import guard
from gastown_mcp.town.base import OPERATOR, operator
from gastown_mcp.town.budgets import BudgetsAPI, BudgetStatus, spend_fields
from gastown_mcp.town.directives import directive_of
from gastown_mcp.town.dogs import DogsAPI
from gastown_mcp.town.plans import PlansAPI
from gastown_mcp.town.traces import Traces

__all__ = ["BOARD_COLUMNS", "BoardFilter", "OverviewAPI"]

BOARD_COLUMNS = ("ready", "waiting", "in_progress", "awaiting_merge", "merged", "blocked")
USAGE_KEYS = ("bead", "convoy", "role", "rig", "agent")
BUDGET_WARN = 0.8  # a budget this far spent shows in "needs you"
LATENCY_BOUNDS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)


class Card(BaseModel):
    id: str
    title: str
    status: BeadStatus
    priority: int
    assignee: str | None = None
    type: str
    attempts: int = 0
    updated_at: str
    closed_at: str | None = None
    labels: list[str] = Field(default_factory=list)


class BoardColumn(BaseModel):
    name: str
    count: int
    offset: int
    limit: int
    cards: list[Card]


class Board(BaseModel):
    columns: list[BoardColumn]
    counts: dict[str, int]


class Attention(BaseModel):
    """One thing waiting for a human, with where to act on it."""

    kind: Literal["estop", "escalation", "blocked", "merge", "budget", "directive"]
    title: str
    detail: str = ""
    at: str | None = None
    bead_id: str | None = None
    request_id: int | None = None
    message_id: int | None = None
    to_operator: bool = False


class UsageLine(BaseModel):
    key: str = Field(description="the bead, convoy, role, rig or agent ('' = none)")
    requests: int
    refused: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    tokens: int
    cost_usd: float
    last_at: str | None = None


class SpendPoint(BaseModel):
    bucket: str
    tokens: int
    cost_usd: float
    cumulative_usd: float


class BeadStory(BaseModel):
    """Everything the bead page shows."""

    bead: Bead
    events: list[Event]
    merges: list[MergeRequest]
    diff: str | None = None
    diff_note: str = ""
    usage: UsageLine
    convoy: str | None = None


class AgentRow(BaseModel):
    agent: Agent
    hook: str | None = None
    generation: int | None = None
    holding: list[str] = Field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    last_activity: str | None = None
    container: str | None = Field(default=None, description="the runtime's state; None without a runtime")
    paused: bool = False


class MetricsSnapshot(BaseModel):
    beads_by_status: dict[str, int]
    ready: int
    awaiting_merge: int
    claims: int
    leases_expired: int
    agents: list[tuple[str, str, int]] = Field(description="(role, state, count)")
    usage: list[dict[str, Any]]
    latency_bounds_ms: list[float]
    latency_counts: list[int]
    latency_count: int
    latency_sum_ms: float
    merges: list[dict[str, Any]]
    pending_nudges: int
    estop: bool


class OverviewAPI(PlansAPI, BudgetsAPI, DogsAPI):
    _overview_repo: OverviewRepo | None = None

    @property
    def _overview(self) -> OverviewRepo:
        if self._overview_repo is None:
            self._overview_repo = OverviewRepo(self._store.db)
        return self._overview_repo

    def trace_with(self, tracing: Tracing) -> Traces:
        """Export a trace per bead run through `tracing` (`[otel] endpoint`); see `gastown_mcp/telemetry.py`."""
        self.traces = Traces(tracing, self._store)
        self._store.beads.on_run_ended.append(self.traces.run_lost)
        return self.traces

    # -- the operator's login --------------------------------------------------------------------------
    def operator_token(self, actor: Agent) -> str:
        """Issue the dashboard login token (shown once); every earlier one stops working."""
        self._require(actor, "town.admin", "issue the operator's dashboard token")
        if actor.name != OPERATOR:
            raise Unauthorized(f"{actor.name} is an agent; only the operator at the CLI issues the dashboard token")
        return self._overview.issue_operator_token(actor.name)

    def operator_login(self, token: str) -> Agent:
        """The operator, for a valid dashboard token. Agents' tokens and gateway keys never open the dashboard."""
        if not token or not self._overview.operator_token_valid(token.strip()):
            raise Unauthorized("not the operator's dashboard token; issue one with `gastown dashboard token`")
        return operator()

    # -- the board -------------------------------------------------------------------------------------
    def board(
        self,
        actor: Agent,
        where: BoardFilter | None = None,
        *,
        columns: tuple[str, ...] = BOARD_COLUMNS,
        limit: int = 25,
        offset: int = 0,
    ) -> Board:
        """Beads by column (ready, waiting, in progress, awaiting merge, merged, blocked), a page of each."""
        self._require(actor, "bead.read", "read the board")
        where = where or BoardFilter()
        unknown = [c for c in columns if c not in COLUMNS]
        if unknown:
            raise InvalidInput(f"no board column {unknown[0]!r}; use one of {', '.join(COLUMNS)}")
        if where.type is not None:
            guard.choice(BeadType, where.type, "type")
        if where.priority is not None:
            guard.priority(where.priority)
        limit, offset = guard.limit(limit), max(0, offset)
        if where == BoardFilter():  # each column from its index
            counts = self._overview.board_counts(where)
            pages = {c: self._overview.board_page(c, where, limit, offset) for c in columns}
        else:
            counts, pages = self._overview.board_filtered(where, columns, limit, offset)
        labels = self._overview.labels_of([r["id"] for page in pages.values() for r in page])
        out = [
            BoardColumn(
                name=c,
                count=counts[c],
                offset=offset,
                limit=limit,
                cards=[Card(**dict(r), labels=labels.get(r["id"], [])) for r in page],
            )
            for c, page in pages.items()
        ]
        return Board(columns=out, counts=counts)

    # -- needs you -------------------------------------------------------------------------------------
    def needs_you(self, actor: Agent, limit: int = 20) -> list[Attention]:
        """What waits for a human: the emergency stop, escalation mail, blocked beads with reasons, failed
        merges, budgets spent or nearly spent, and directives waiting for a human."""
        self._require(actor, "town.admin", "see what needs the operator")
        items: list[Attention] = []
        stop = self.frozen()
        if stop is not None:
            items.append(
                Attention(kind="estop", title=f"emergency stop by {stop.get('by')}", detail=str(stop.get("reason")))
            )
        mayors = [a.name for a in self._store.agents.all(role=Role.mayor)]
        for m in self._overview.unread_mail([OPERATOR, *mayors], limit):
            msg: Message = rows.message(m)
            items.append(
                Attention(
                    kind="escalation",
                    title=msg.subject or msg.body[:80],
                    detail=f"from {msg.sender} to {msg.recipient}: {msg.body}",
                    at=msg.created_at,
                    message_id=msg.id,
                    to_operator=msg.recipient == OPERATOR,
                )
            )
        for b in self._overview.blocked(limit):
            items.append(
                Attention(
                    kind="blocked",
                    title=f"{b['id']} blocked: {b['title']}",
                    detail=b["reason"] or "no reason recorded",
                    at=b["updated_at"],
                    bead_id=b["id"],
                )
            )
        for r in self._overview.failed_merges(limit):
            items.append(
                Attention(
                    kind="merge",
                    title=f"merge request {r['id']} {r['state']}: {r['bead_id']} {r['title']}",
                    detail=r["detail"] or "",
                    at=r["updated_at"],
                    bead_id=r["bead_id"],
                    request_id=r["id"],
                )
            )
        for budget in self.budgets.show():
            warn = _budget_warning(budget)
            if warn:
                title = f"{budget.scope.value} {budget.name} budget {warn}"
                items.append(Attention(kind="budget", title=title, at=budget.updated_at))
        items += self.directives_waiting(actor)
        return items

    def directives_waiting(self, actor: Agent) -> list[Attention]:
        """Overseer directives that wait for a human (escalations, and any directive addressed to the operator
        because the town has no mayor), still open: the dashboard shows them in "needs you"."""
        self._require(actor, "town.admin", "see what needs the operator")
        found = []
        for row in self._store.goals.directives(("issued", "acknowledged"), OPERATOR, 50):
            d = directive_of(row)
            question = str(d.args.get("question") or d.args.get("about") or d.note or d.reason or "")
            found.append(
                Attention(
                    kind="directive",
                    title=f"directive #{d.id}: {d.kind.value} ({d.state.value})",
                    detail=f"{question[:500]} - answer with `gastown directive done {d.id}` or `refuse {d.id}`",
                    at=d.created_at,
                    to_operator=True,
                )
            )
        return found

    # -- one bead's story ------------------------------------------------------------------------------
    def bead_story(self, actor: Agent, bead_id: str, events: int = 200) -> BeadStory:
        """A bead with its events, merge requests, the diff of its branch and what its model calls cost."""
        self._require(actor, "bead.read", "read beads")
        bead = self._store.beads.get(bead_id)
        evs = self._store.events.since(bead_id=bead_id, limit=guard.limit(min(events, 500)))
        merges = [self._store.merges.get(r["id"]) for r in self._overview.merge_requests_of(bead_id)]
        diff, note = self._bead_diff(bead, merges)
        used = self._overview.bead_usage(bead_id)
        usage = UsageLine(
            key=bead_id,
            requests=int(used["requests"]) if used else 0,
            tokens=int(used["tokens"]) if used else 0,
            cost_usd=round(float(used["cost_usd"]), 9) if used else 0.0,
        )
        convoy = next((d.depends_on for d in bead.deps if d.kind.value == "parent" and d.bead_id == bead_id), None)
        return BeadStory(bead=bead, events=evs, merges=merges, diff=diff, diff_note=note, usage=usage, convoy=convoy)

    def _bead_diff(self, bead: Bead, merges: list[MergeRequest]) -> tuple[str | None, str]:
        base = tip = rig_name = None
        if merges:
            rig_name, base, tip = merges[0].rig, merges[0].base, merges[0].tip
        elif bead.result is not None and bead.result.base and bead.result.commit:
            base, tip = bead.result.base, bead.result.commit
            rig_name = next((lb[4:] for lb in bead.labels if lb.startswith("rig:")), None)
        if not (rig_name and base and tip):
            return None, "no branch handed in yet"
        try:
            return rigs.diff(rigs.get_rig(self.settings.town_dir, rig_name), base, tip), ""
        except (GastownError, OSError) as exc:
            return None, f"the diff could not be read: {exc}"

    # -- agents ----------------------------------------------------------------------------------------
    def agent_rows(self, actor: Agent, *, include_exited: bool = True, limit: int = 500) -> list[AgentRow]:
        """Every agent with its hook, generation, beads held, spend, last activity and container state."""
        self._require(actor, "town.agents", "list agents")
        spend = {u.agent: u for u in self.budgets.usage()}
        containers = self.containers(actor)
        paused = set(self.paused_containers(actor) or [])
        agents = self._store.agents.all()
        # What each live agent holds (an index lookup per agent; exited agents hold nothing).
        held = {a.name: [b.id for b in self._store.beads.held_by(a.name)] for a in agents if a.state.alive}
        out = []
        for a in agents:
            if not include_exited and not a.state.alive:
                continue
            u = spend.get(a.name)
            tokens = (u.input_tokens + u.output_tokens + u.cache_creation_tokens + u.cache_read_tokens) if u else 0
            gen = a.metadata.get("generation")
            out.append(
                AgentRow(
                    agent=a,
                    hook=str(a.metadata["hook"]) if a.metadata.get("hook") else None,
                    generation=int(gen) if isinstance(gen, int | str) and str(gen).isdigit() else None,
                    holding=held.get(a.name, []),
                    tokens=tokens,
                    cost_usd=u.cost_usd if u else 0.0,
                    last_activity=max((t for t in (a.last_seen, u.last_at if u else None) if t), default=None),
                    container=containers[a.name].state if containers and a.name in containers else None,
                    paused=a.name in paused,
                )
            )
        out.sort(key=lambda r: (not r.agent.state.alive, r.agent.name))
        return out[:limit]

    # -- spend -----------------------------------------------------------------------------------------
    def usage_by(self, actor: Agent, by: str, limit: int = 50) -> list[UsageLine]:
        """Model spend grouped by bead, convoy, role, rig or agent, dearest first. A request counts for the bead
        its agent last claimed before it (polecats work one bead); '' collects spend outside any bead."""
        self._require(actor, "town.usage", "read usage")
        if by not in USAGE_KEYS:
            raise InvalidInput(f"usage can be grouped by {', '.join(USAGE_KEYS)}, not {by!r}")
        return [
            UsageLine(key=r["key"] or "", tokens=r["tokens"] or 0, **spend_fields(r))
            for r in self._overview.usage_by(by, guard.limit(limit))
        ]

    def spend_series(self, actor: Agent) -> list[SpendPoint]:
        """Tokens and USD per minute, hour or day (whichever gives a readable chart), with the running total."""
        self._require(actor, "town.usage", "read usage")
        first, last = self._overview.usage_span()
        if first is None or last is None:
            return []
        span = _seconds_between(first, last)
        width = 16 if span <= 3 * 3600 else 13 if span <= 4 * 86400 else 10
        total, out = 0.0, []
        for r in self._overview.usage_series(width):
            total += r["cost_usd"] or 0.0
            out.append(
                SpendPoint(
                    bucket=r["bucket"], tokens=r["tokens"] or 0, cost_usd=r["cost_usd"] or 0.0, cumulative_usd=total
                )
            )
        return out

    # -- metrics ---------------------------------------------------------------------------------------
    def metrics(self, actor: Agent) -> MetricsSnapshot:
        """The figures `/metrics` exports, read in one go."""
        self._require(actor, "town.status", "read the town's metrics")
        agents: dict[tuple[str, str], int] = {}
        for a in self._store.agents.all():
            key = (a.role.value, a.state.value)
            agents[key] = agents.get(key, 0) + 1
        counts, total, total_ms = self._overview.duration_buckets(LATENCY_BOUNDS_MS)
        return MetricsSnapshot(
            beads_by_status=self._store.beads.counts(),
            ready=self._store.beads.ready_count(),
            awaiting_merge=self._store.beads.awaiting_merge_count(),
            claims=self._overview.claims(),
            leases_expired=self._overview.expired_leases(now_iso()),
            agents=[(role, state, n) for (role, state), n in sorted(agents.items())],
            usage=[dict(r) for r in self._overview.usage_totals()],
            latency_bounds_ms=list(LATENCY_BOUNDS_MS),
            latency_counts=counts,
            latency_count=total,
            latency_sum_ms=total_ms,
            merges=[dict(r) for r in self._overview.merge_depth()],
            pending_nudges=self._store.messages.pending_count(),
            estop=self.frozen() is not None,
        )

    def change_stamp(self, actor: Agent) -> tuple[int, ...]:
        """A value that changes whenever the town's data does (any write), for views that redraw only then."""
        self._require(actor, "town.status", "read the town's state")
        return self._overview.change_stamp()

    def dispatch_latencies(self, actor: Agent, after_id: int) -> list[tuple[int, float]]:
        """(claim event id, seconds from ready to claimed) for claims after event `after_id`, oldest first."""
        self._require(actor, "town.status", "read the town's metrics")
        return self._overview.dispatch_latencies(after_id)

    def gate_times(self, actor: Agent, after_id: int) -> tuple[list[float], int]:
        """Seconds merge requests spent in testing, for spells begun after event `after_id` and ended; and the
        event id to ask from next time."""
        self._require(actor, "town.status", "read the town's metrics")
        return self._overview.gate_times(after_id)

    def metric_state(self, actor: Agent, name: str) -> tuple[int, str] | None:
        """The saved state of the `/metrics` histogram `name` with the event it counted up to, if it fits the
        events of this town (see `OverviewRepo.metric_state`); None: count from the first event."""
        self._require(actor, "town.status", "read the town's metrics")
        return self._overview.metric_state(name)

    def save_metric_state(self, actor: Agent, name: str, expected: int | None, cursor: int, state: str) -> bool:
        """Keep the histogram `name` counted up to event `cursor` (derived data, outside the journal), unless
        another process moved it on from `expected` first."""
        self._require(actor, "town.status", "read the town's metrics")
        return self._overview.save_metric_state(name, expected, cursor, state)


def _budget_warning(b: BudgetStatus) -> str:
    if b.exhausted:
        return "is spent: the gateway refuses requests"
    fractions = []
    if b.token_limit:
        fractions.append(b.tokens_spent / b.token_limit)
    if b.usd_limit:
        fractions.append(b.usd_spent / b.usd_limit)
    top = max(fractions, default=0.0)
    return f"is {top:.0%} spent" if top >= BUDGET_WARN else ""


def _seconds_between(first: str, last: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    with contextlib.suppress(ValueError):
        return time.mktime(time.strptime(last, fmt)) - time.mktime(time.strptime(first, fmt))
    return 0.0
