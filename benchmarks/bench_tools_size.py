"""Bytes of each role's `tools/list` as a client receives it (the JSON of the tools, with schemas).

Tool schemas are sent to the model on every turn, so this is a per-turn token cost for every agent.
Listed through the real in-process `mcp.Client`, acting as one agent of each role.
Run: .venv/bin/python benchmarks/bench_tools_size.py — writes benchmarks/results/bench_tools_size.json.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
from _report import write_report
from mcp import Client

from gastown_mcp.assemble import scratch_town as make_town
from gastown_mcp.models import Role
from gastown_mcp.server import build_server
from gastown_mcp.town import operator


def size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


async def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        town_dir = Path(tmp) / "town"
        town_dir.mkdir()
        town = make_town(town_dir, "bench")
        for role in Role:
            agent = town.agent_add(operator(), f"{role.value}-1", role.value).agent
            async with Client(build_server(town, agent)) as client:
                tools = (await client.list_tools()).tools
            dumped = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
            per_tool = {t["name"]: size(t) for t in dumped}
            out[role.value] = {
                "tools": len(dumped),
                "bytes": size({"tools": dumped}),
                "input_schema_bytes": sum(size(t.get("inputSchema", {})) for t in dumped),
                "output_schema_bytes": sum(size(t.get("outputSchema", {})) for t in dumped),
                "per_tool": dict(sorted(per_tool.items(), key=lambda kv: -kv[1])),
            }
        town.close()
    return out


def main() -> None:
    figures = anyio.run(run)
    print(f"{'role':<10} {'tools':>5} {'bytes':>7} {'inputs':>7} {'outputs':>8}")
    for role, r in figures.items():
        print(f"{role:<10} {r['tools']:>5} {r['bytes']:>7} {r['input_schema_bytes']:>7} {r['output_schema_bytes']:>8}")
    polecat = figures["polecat"]
    print(f"\npolecat total: {polecat['bytes']} bytes (~{polecat['bytes'] // 4} tokens at ~4 bytes/token); per tool:")
    for name, n in polecat["per_tool"].items():
        print(f"  {name:<16} {n:>6}")
    note = "compact JSON of the tools array as listed to a client of each role (name, description, schemas)"
    write_report("bench_tools_size", figures, note=note)


if __name__ == "__main__":
    main()
