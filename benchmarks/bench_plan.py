"""Plan figures with the scripted stand-in: beads per plan, tokens and USD metered by the gateway under the
refinery's key, and time from goal to a created convoy (the real anthropic client -> gateway -> stand-in)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _report import write_report

from gastown_mcp.assemble import open_town
from gastown_mcp.config import GatewayConfig, Settings, Upstream
from gastown_mcp.gateway import build_gateway
from gastown_mcp.planners import build_models
from gastown_mcp.serving import serve_in_thread
from gastown_mcp.standin import build_standin
from gastown_mcp.standin.planner import Models
from gastown_mcp.town import operator

KEY = "sk-ant-bench-standin"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plans", type=int, default=10)
    args = parser.parse_args()
    standin = build_standin(Models(), expected_key=KEY)
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(standin.app) as upstream:
        cfg = GatewayConfig(upstreams={"standin": Upstream(base_url=upstream)}, default_upstream="standin")
        town = open_town(Settings(town_dir=Path(tmp), gateway=cfg))
        with serve_in_thread(build_gateway(town, {"ANTHROPIC_API_KEY": KEY})) as gateway:
            town.use_models(build_models(gateway))
            rows = []
            for n in range(args.plans):
                goal = ("[repair] " if n % 2 else "") + f"Add a notes command line, take {n}"
                result = town.plan_create(operator(), goal)
                rows.append((result, len(result.plan.items)))
        usage = town.usage(operator())
        town.close()
    one, repaired = [r for r, _ in rows if r.rounds == 1], [r for r, _ in rows if r.rounds == 2]
    results = {
        "plans": len(rows),
        "beads_per_plan": statistics.median(n for _, n in rows),
        "tokens_per_plan_one_round": statistics.median(r.input_tokens + r.output_tokens for r in one),
        "tokens_per_plan_with_repair": statistics.median(r.input_tokens + r.output_tokens for r in repaired),
        "seconds_p50_one_round": statistics.median(r.seconds for r in one),
        "seconds_p50_with_repair": statistics.median(r.seconds for r in repaired),
        "metered": [u.model_dump(mode="json") if hasattr(u, "model_dump") else str(u) for u in usage],
    }
    print(results)
    write_report("plan", results)


if __name__ == "__main__":
    main()
