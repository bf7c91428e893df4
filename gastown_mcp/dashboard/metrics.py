"""`/metrics` in the Prometheus text format (0.0.4): beads, claims, expired leases, agents, model tokens and
USD by agent/role/rig, gateway latency as a histogram, merge queue depth, gate runs and gate time, dispatch
latency (ready to claimed), the emergency stop.

Gate time and dispatch latency are histograms over the town's events (`Observed`), kept in the town with the
event each counted up to: every scrape (a new process's first one too) reads only the events after it, so a
scrape stays cheap however long the town has run.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence

from gastown_mcp.errors import GastownError
from gastown_mcp.models import Agent
from gastown_mcp.town import Town
from gastown_mcp.town.overview import MetricsSnapshot

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


Sample = tuple[str, dict[str, object], float]


def _family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{suffix}{_labels(**labels)} {_num(value)}" for suffix, labels, value in samples]
    return "\n".join(lines)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


DISPATCH_BOUNDS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
GATE_BOUNDS_S = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH = 5000  # events the store reads per call (`OverviewRepo.dispatch_latencies`, `gate_times`)


class Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            out.append(("_bucket", {"le": _num(bound)}, running))
        out += [("_bucket", {"le": "+Inf"}, self.count), ("_count", {}, self.count), ("_sum", {}, self.sum)]
        return out

    def dumps(self) -> str:
        return json.dumps({"bounds": self.bounds, "counts": self.counts, "count": self.count, "sum": self.sum})

    @classmethod
    def loads(cls, bounds: Sequence[float], text: str) -> Histogram | None:
        """The histogram saved as `text`, or None when it is unreadable or has other buckets than `bounds`."""
        h = cls(bounds)
        try:
            saved = json.loads(text)
            if tuple(saved["bounds"]) != h.bounds or len(saved["counts"]) != len(h.bounds):
                return None
            h.counts = [int(n) for n in saved["counts"]]
            h.count, h.sum = int(saved["count"]), float(saved["sum"])
        except (ValueError, KeyError, TypeError):
            return None
        return h


class Observed:
    """Dispatch latency and gate time, counted from the town's events as they come.

    The town keeps each histogram with the event it counted up to (`Town.metric_state`): a scrape loads them,
    counts only the events after that one and saves what moved, so the first scrape of a new process is as
    cheap as any other, events archived after they were counted stay counted, and a database restored from
    an older backup (whose saved state does not fit its events) is counted again from its first event.
    """

    def __init__(self) -> None:
        self.dispatch = Histogram(DISPATCH_BOUNDS_S)
        self.gate = Histogram(GATE_BOUNDS_S)
        self._lock = threading.Lock()

    def _load(self, town: Town, actor: Agent, name: str, bounds: Sequence[float]) -> tuple[Histogram, int, int | None]:
        """(the histogram, its cursor, the cursor saved in the town or None)."""
        saved = town.metric_state(actor, name)
        if saved is not None:
            h = Histogram.loads(bounds, saved[1])
            if h is not None:
                return h, saved[0], saved[0]
        return Histogram(bounds), 0, None

    def catch_up(self, town: Town, actor: Agent) -> None:
        with self._lock:
            dispatch, claims, saved_claims = self._load(town, actor, "dispatch", DISPATCH_BOUNDS_S)
            gate, gates, saved_gates = self._load(town, actor, "gate", GATE_BOUNDS_S)
            # the last claim event counted
            while True:
                found = town.dispatch_latencies(actor, claims)
                for event_id, seconds in found:
                    dispatch.observe(seconds)
                    claims = event_id
                if len(found) < BATCH:
                    break
            # the event before the first testing spell not counted yet
            while True:
                spells, cursor = town.gate_times(actor, gates)
                for seconds in spells:
                    gate.observe(seconds)
                moved, gates = cursor != gates, cursor
                if len(spells) < BATCH or not moved:
                    break
            self.dispatch, self.gate = dispatch, gate
            try:
                if claims != saved_claims:
                    town.save_metric_state(actor, "dispatch", saved_claims, claims, dispatch.dumps())
                if gates != saved_gates:
                    town.save_metric_state(actor, "gate", saved_gates, gates, gate.dumps())
            except GastownError as exc:  # the scrape still answers; the next one counts these events again
                log.warning("the /metrics histograms could not be saved: %s", exc)


def render(m: MetricsSnapshot, observed: Observed | None = None) -> str:
    usage_tokens: list[Sample] = [
        ("", {"agent": u["agent"], "role": u["agent_role"], "rig": u["usage_rig"], "kind": k[: -len("_tokens")]}, u[k])
        for u in m.usage
        for k in TOKEN_KINDS
        if u["outcome"] != "refused"
    ]
    usd: list[Sample] = [
        ("", {"agent": u["agent"], "role": u["agent_role"], "rig": u["usage_rig"]}, u["cost_usd"] or 0.0)
        for u in m.usage
        if u["outcome"] != "refused"
    ]
    requests: list[Sample] = [
        (
            "",
            {"agent": u["agent"], "role": u["agent_role"], "rig": u["usage_rig"], "outcome": u["outcome"]},
            u["requests"],
        )
        for u in m.usage
    ]
    buckets: list[Sample] = [
        ("_bucket", {"le": _num(b / 1000)}, c) for b, c in zip(m.latency_bounds_ms, m.latency_counts, strict=True)
    ]
    buckets += [("_bucket", {"le": "+Inf"}, m.latency_count), ("_count", {}, m.latency_count)]
    buckets.append(("_sum", {}, m.latency_sum_ms / 1000))
    depth: list[Sample] = [
        ("", {"rig": r["rig"], "state": r["state"]}, r["n"]) for r in m.merges if r["state"] in ("queued", "testing")
    ]
    merges = [("", {"rig": r["rig"], "state": r["state"]}, r["n"]) for r in m.merges]
    gate_runs: dict[str, int] = {}
    for r in m.merges:
        gate_runs[r["rig"]] = gate_runs.get(r["rig"], 0) + (r["gate_runs"] or 0)
    families = [
        _family(
            "gastown_beads",
            "gauge",
            "Beads by status.",
            [("", {"status": s}, n) for s, n in sorted(m.beads_by_status.items())],
        ),
        _family("gastown_beads_ready", "gauge", "Beads ready to claim.", [("", {}, m.ready)]),
        _family(
            "gastown_beads_awaiting_merge",
            "gauge",
            "Beads done and handed in, not on main yet.",
            [("", {}, m.awaiting_merge)],
        ),
        _family("gastown_claims_total", "counter", "Beads claimed.", [("", {}, m.claims)]),
        _family("gastown_leases_expired", "gauge", "Claimed beads whose lease ran out.", [("", {}, m.leases_expired)]),
        _family(
            "gastown_agents",
            "gauge",
            "Agents by role and state.",
            [("", {"role": r, "state": s}, n) for r, s, n in m.agents],
        ),
        _family("gastown_model_tokens_total", "counter", "Model tokens metered by the gateway.", usage_tokens),
        _family("gastown_model_cost_usd_total", "counter", "Model spend in USD metered by the gateway.", usd),
        _family("gastown_model_requests_total", "counter", "Model requests by outcome.", requests),
        _family(
            "gastown_gateway_request_duration_seconds",
            "histogram",
            "Gateway request duration (metered requests).",
            buckets,
        ),
        _family("gastown_merge_queue_depth", "gauge", "Merge requests queued or being tested.", depth),
        _family("gastown_merge_requests", "gauge", "Merge requests by state.", merges),
        _family(
            "gastown_merge_gate_runs_total",
            "counter",
            "Gate runs of the merge queue.",
            [("", {"rig": k}, v) for k, v in sorted(gate_runs.items())],
        ),
        _family(
            "gastown_merge_gate_seconds",
            "histogram",
            "Seconds a merge request spent in testing: rebase, gates, verify commands, review and landing.",
            (observed or Observed()).gate.samples(),
        ),
        _family(
            "gastown_dispatch_latency_seconds",
            "histogram",
            "Seconds from a bead becoming ready (created, released, reopened or unblocked) to its claim.",
            (observed or Observed()).dispatch.samples(),
        ),
        _family("gastown_nudges_pending", "gauge", "Nudges not delivered yet.", [("", {}, m.pending_nudges)]),
        _family("gastown_estop", "gauge", "1 while the emergency stop is in force.", [("", {}, int(m.estop))]),
    ]
    return "\n".join(families) + "\n"
