"""`/metrics` in the Prometheus text format (0.0.4): beads, claims, expired leases, agents, model tokens and
USD by agent/role/rig, gateway latency as a histogram, merge queue depth and gate runs, the emergency stop."""

from __future__ import annotations

from collections.abc import Iterable

from gastown_mcp.town.overview import MetricsSnapshot

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


def render(m: MetricsSnapshot) -> str:
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
        _family("gastown_nudges_pending", "gauge", "Nudges not delivered yet.", [("", {}, m.pending_nudges)]),
        _family("gastown_estop", "gauge", "1 while the emergency stop is in force.", [("", {}, int(m.estop))]),
    ]
    return "\n".join(families) + "\n"
