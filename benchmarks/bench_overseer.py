"""Overseer figures with the scripted stand-in (the real anthropic client -> the town's gateway -> stand-in):
model requests per idle tick (counted as the gateway's usage rows; must be 0), the cost of an idle tick, and
the cost of a tick that wakes the model (a goal added -> a plan_goal directive)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _report import write_report

from gastown_mcp.assemble import open_town
from gastown_mcp.config import GatewayConfig, OverseerSection, Settings, Upstream
from gastown_mcp.gateway import build_gateway
from gastown_mcp.planners import build_models
from gastown_mcp.planners.overseer import build_overseer
from gastown_mcp.serving import serve_in_thread
from gastown_mcp.standin import build_standin
from gastown_mcp.standin.overseer import loop_models
from gastown_mcp.supervisor.overseer import Overseer
from gastown_mcp.town import operator

KEY = "sk-ant-bench-standin"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--goals", type=int, default=10)
    parser.add_argument("--idle-ticks", type=int, default=200, help="ticks with nothing new after each goal")
    args = parser.parse_args()
    standin = build_standin(loop_models(), expected_key=KEY)
    op = operator()
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(standin.app) as upstream:
        cfg = GatewayConfig(upstreams={"standin": Upstream(base_url=upstream)}, default_upstream="standin")
        town = open_town(Settings(town_dir=Path(tmp), gateway=cfg, overseer=OverseerSection(enabled=True)))
        town.agent_add(op, "mayor", "mayor")
        with serve_in_thread(build_gateway(town, {"ANTHROPIC_API_KEY": KEY})) as gateway:
            town.use_models(build_models(gateway))
            overseer = Overseer(town, build_overseer(town, gateway))
            overseer.tick()
            woken, idle, idle_requests = [], [], 0
            for n in range(args.goals):
                town.goal_add(op, f"Document the sample project, take {n}")
                started = time.perf_counter()
                overseer.tick()
                woken.append(time.perf_counter() - started)
                before = overseer.tally.model_requests
                for _ in range(args.idle_ticks):
                    started = time.perf_counter()
                    overseer.tick()
                    idle.append(time.perf_counter() - started)
                idle_requests += overseer.tally.model_requests - before
        usage = [u for u in town.usage(op) if u.agent == "overseer"]
        town.close()
    results = {
        "goals": args.goals,
        "directives_issued": len(overseer.tally.issued),
        "idle_ticks": len(idle),
        "model_requests_per_idle_tick": idle_requests / len(idle),
        "idle_tick_ms_p50": round(statistics.median(idle) * 1000, 3),
        "woken_tick_ms_p50": round(statistics.median(woken) * 1000, 1),
        "overseer_requests_metered": usage[0].requests if usage else 0,
        "overseer_tokens_per_request": round(
            (usage[0].input_tokens + usage[0].output_tokens) / max(1, usage[0].requests) if usage else 0
        ),
        "overseer_usd": round(usage[0].cost_usd, 4) if usage else 0.0,
    }
    print(results)
    write_report("overseer", results)


if __name__ == "__main__":
    main()
