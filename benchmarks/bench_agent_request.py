"""Tokens a real Claude Code sends the model per request, as the mayor and as a polecat run it, against its defaults.

`sandbox/run-claude.sh` (the agent image's launcher) runs on this machine for each case, with the town's MCP
server over HTTP and the scripted stand-in as the model (no key, no network); the stand-in records the first
request and this script counts its tokens as the stand-in meters them (UTF-8 bytes / 4): the tool list, the
system prompt, the first user message. Cases: the mayor with its container command's arguments (`--tools ""`
and its own short system prompt), a polecat with the launcher's default built-in tools, and either role with
Claude Code's defaults (every built-in tool, its own system prompt) as the reference in the same run.

Run: .venv/bin/python benchmarks/bench_agent_request.py
Writes benchmarks/results/bench_agent_request.json.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _report import write_report

from gastown_mcp import serving
from gastown_mcp.assemble import scratch_town
from gastown_mcp.server.client import serve_http
from gastown_mcp.standin import Hello, build_standin
from gastown_mcp.standin.conversation import Tokens, count_tokens
from gastown_mcp.town import mayor, operator

ROOT = Path(__file__).resolve().parent.parent
CLAUDE_DIR = ROOT / ".cache/npm-claude/node_modules/@anthropic-ai/claude-code-linux-x64"
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("mayor, its container command", "mayor", tuple(mayor.COMMAND[1:])),
    ("mayor, Claude Code's defaults", "mayor", ("--tools", "default")),
    ("polecat, the launcher's built-in tools", "polecat", ()),
    ("polecat, Claude Code's defaults", "polecat", ("--tools", "default")),
]


def first_request(role: str, args: tuple[str, ...]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gastown-request-") as tmp:
        base = Path(tmp)
        (base / "town").mkdir()
        (base / "home").mkdir()
        opt = base / "opt"
        opt.mkdir()
        (opt / "prompts").symlink_to(ROOT / "gastown_mcp" / "prompts")
        (opt / "settings.json").symlink_to(ROOT / "sandbox" / "settings.json")
        town = scratch_town(base / "town", "bench")
        creds = town.agent_add(operator(), f"{role}-1", role)
        standin = build_standin(Hello())
        with serve_http(town) as mcp_url, serving.serve_in_thread(standin.app) as model_url:
            env = {
                "HOME": str(base / "home"),
                "PATH": f"{CLAUDE_DIR}:/usr/local/bin:/usr/bin:/bin",
                "GASTOWN_OPT": str(opt),
                "GASTOWN_AGENT": f"{role}-1",
                "GASTOWN_ROLE": role,
                "GASTOWN_MCP_URL": mcp_url,
                "GASTOWN_TOKEN": creds.token,
                "GASTOWN_MAX_TURNS": "1",
                "ANTHROPIC_BASE_URL": model_url,
                "ANTHROPIC_AUTH_TOKEN": "sk-standin",
                "IS_SANDBOX": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
                "ENABLE_TOOL_SEARCH": "false",
            }
            command = [str(ROOT / "sandbox" / "run-claude.sh"), *args]
            done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=180, check=False)
        town.close()
    sent = [r.body for r in standin.requests if r.path == "/v1/messages" and r.body.get("tools")]
    if not sent:
        raise SystemExit(f"Claude Code sent no model request with tools: {done.stdout[-500:]} {done.stderr[-500:]}")
    body = sent[0]
    tools = body["tools"]
    return {
        "tokens": Tokens().input_total(body),
        "tools": len(tools),
        "built_in_tools": sorted(str(t["name"]) for t in tools if not str(t["name"]).startswith("mcp__")),
        "tool_tokens": count_tokens(tools),
        "system_tokens": count_tokens(body.get("system")),
        "message_tokens": count_tokens(body.get("messages")),
    }


def main() -> None:
    if not (CLAUDE_DIR / "claude").exists():  # `make bench` runs every script: say why this one measured nothing
        print(f"skipped: Claude Code is not installed at {CLAUDE_DIR}; run `make claude`, then this script again")
        return
    figures = {name: {"role": role, **first_request(role, args)} for name, role, args in CASES}
    for name, f in figures.items():
        print(
            f"{name:<40} {f['tokens']:>6} tokens: tools {f['tool_tokens']} ({f['tools']}, "
            f"{len(f['built_in_tools'])} built in), system {f['system_tokens']}, messages {f['message_tokens']}"
        )
    for role in ("mayor", "polecat"):
        ours, default = (f["tokens"] for f in figures.values() if f["role"] == role)
        print(f"{role}: {ours / default:.2f} of the tokens of Claude Code's defaults")
    write_report("bench_agent_request", figures)


if __name__ == "__main__":
    main()
