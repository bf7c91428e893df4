"""Bytes of the town's MCP tools as the model sees them: captured from the request a real Claude Code sends.

Claude Code (from `make claude`) runs one `-p` turn as a polecat against the scripted stand-in, with the town's
MCP server over HTTP (`ENABLE_TOOL_SEARCH=false`, so every MCP tool is in the model's tool list). The stand-in
records the request; this script sums the JSON of each `mcp__gastown__*` tool in it (name, description, input
schema: what Claude Code forwards; output schemas and annotations never reach the model), beside the role's
`tools/list` size on the wire. Everything stays on loopback; no key, no network.

Run: .venv/bin/python benchmarks/bench_tools_model.py [--role polecat]
Writes benchmarks/results/bench_tools_model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _report import write_report

from gastown_mcp import serving
from gastown_mcp.assemble import scratch_town
from gastown_mcp.server.client import serve_http
from gastown_mcp.standin import Hello, build_standin
from gastown_mcp.town import operator

ROOT = Path(__file__).resolve().parent.parent
CLAUDE_BIN = ROOT / ".cache/npm-claude/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
PREFIX = "mcp__gastown__"


def size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def capture(role: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gastown-tools-") as tmp:
        (Path(tmp) / "town").mkdir()
        town = scratch_town(Path(tmp) / "town", "bench")
        creds = town.agent_add(operator(), f"{role}-1", role)
        standin = build_standin(Hello())
        with serve_http(town) as mcp_url, serving.serve_in_thread(standin.app) as model_url:
            config = {"mcpServers": {"gastown": {"type": "http", "url": mcp_url,
                                                 "headers": {"Authorization": f"Bearer {creds.token}"}}}}  # fmt: skip
            env = {
                "HOME": str(Path(tmp) / "home"),
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "ANTHROPIC_BASE_URL": model_url,
                "ANTHROPIC_API_KEY": "sk-standin",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "ENABLE_TOOL_SEARCH": "false",
                "DISABLE_AUTOUPDATER": "1",
                "MCP_CONNECTION_NONBLOCKING": "false",
            }
            cmd = [str(CLAUDE_BIN), "-p", "say hello", "--output-format", "json", "--model", "scripted-standin",
                   "--mcp-config", json.dumps(config), "--strict-mcp-config"]  # fmt: skip
            done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=180, check=False)
        town.close()
        if not standin.requests:
            raise SystemExit(f"Claude Code sent no model request: {done.stdout[-500:]} {done.stderr[-500:]}")
        sent = next(r for r in standin.requests if r.path == "/v1/messages").body.get("tools", [])
    ours = [t for t in sent if str(t.get("name", "")).startswith(PREFIX)]
    per_tool = {t["name"][len(PREFIX) :]: size(t) for t in ours}
    return {
        "role": role,
        "claude_code": subprocess.run([str(CLAUDE_BIN), "--version"], capture_output=True, text=True).stdout.strip(),
        "tools": len(ours),
        "model_visible_bytes": size(ours),
        "keys_sent": sorted({k for t in ours for k in t}),
        "all_tools_in_request": len(sent),
        "per_tool": dict(sorted(per_tool.items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="polecat")
    args = parser.parse_args()
    if not CLAUDE_BIN.exists():  # `make bench` runs every script: say why this one measured nothing
        print(f"skipped: Claude Code is not installed at {CLAUDE_BIN}; run `make claude`, then this script again")
        return
    os.environ.pop("ANTHROPIC_AUTH_TOKEN", None)
    figures = capture(args.role)
    print(
        f"{args.role}: {figures['tools']} town tools, {figures['model_visible_bytes']} bytes as Claude Code sends them"
    )
    for name, n in figures["per_tool"].items():
        print(f"  {name:<16} {n:>6}")
    write_report("bench_tools_model", figures, params=vars(args))


if __name__ == "__main__":
    main()
