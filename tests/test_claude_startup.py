"""Real Claude Code in `-p` mode has the town's tools on its very first turn, over stdio and over HTTP.

Claude Code connects MCP servers in the background in print mode; a first turn sent before the town's
server answered has no town tools at all. The agents' settings (`sandbox/settings.json`, passed with
`--settings` as `sandbox/run-claude.sh` does) make it wait. Each case runs a few times: the race is timing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import unavailable

from gastown_mcp import assemble
from gastown_mcp.config import TOWN_FILE, default_town_toml, load_settings
from gastown_mcp.server import http_app
from gastown_mcp.serving import bind, serve
from gastown_mcp.standin import Hello, build_standin
from gastown_mcp.town import operator

pytestmark = pytest.mark.claude

ROOT = Path(__file__).resolve().parent.parent
CLAUDE_BIN = ROOT / ".cache/npm-claude/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
SETTINGS = ROOT / "sandbox/settings.json"
GASTOWN = Path(sys.executable).parent / "gastown"
KEY = "sk-standin-startup"
RUNS = 2
SLOW_START_S = 7


@pytest.fixture
def town_dir(tmp_path: Path) -> Path:
    if not CLAUDE_BIN.exists():
        unavailable(f"Claude Code is not installed at {CLAUDE_BIN}: run `make claude`")
    path = tmp_path / "town"
    path.mkdir()
    (path / TOWN_FILE).write_text(default_town_toml("startup", "st"))
    assemble.open_town(load_settings(path), new=True).close()
    return path


async def _first_turn_tools(mcp_server: dict[str, Any], home: Path, cwd: Path) -> tuple[list[str], dict[str, Any]]:
    """The tool names Claude Code sent the model on its first request, and its init event."""
    standin = build_standin(Hello(), expected_key=KEY)
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "ANTHROPIC_API_KEY": KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    config = json.dumps({"mcpServers": {"gastown": mcp_server}})
    async with serve(standin.app) as url:
        env["ANTHROPIC_BASE_URL"] = url
        command = [str(CLAUDE_BIN), "-p", "say hello", "--model", "scripted-standin"]
        command += ["--output-format", "stream-json", "--verbose", "--settings", str(SETTINGS)]
        command += ["--mcp-config", config, "--strict-mcp-config", "--max-turns", "2"]
        with anyio.fail_after(120):
            done = await anyio.run_process(command, env=env, cwd=cwd, check=False)
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    init = next(e for e in events if e.get("type") == "system" and e.get("subtype") == "init")
    first = next(r for r in standin.requests if r.path.startswith("/v1/messages") and r.body.get("tools"))
    return [t["name"] for t in first.body["tools"]], init


async def test_over_stdio_the_first_turn_has_the_town_tools_even_from_a_slow_starting_server(
    town_dir: Path, tmp_path: Path
) -> None:
    town = assemble.open_town(load_settings(town_dir))
    try:
        town.agent_add(operator(), "mayor", "mayor", None)
    finally:
        town.close()
    # A server that takes 7 s to start: longer than Claude Code's default wait (5 s) for any server.
    serve_command = f"sleep {SLOW_START_S}; exec {GASTOWN} serve --town {town_dir} --as mayor"
    server = {"command": "/bin/sh", "args": ["-c", serve_command]}
    for run in range(RUNS):
        tools, init = await _first_turn_tools(server, tmp_path / f"home{run}", tmp_path)
        assert "mcp__gastown__bead_create" in tools, (run, init.get("mcp_servers"))
        assert [(s["name"], s["status"]) for s in init["mcp_servers"]] == [("gastown", "connected")]


async def test_over_http_the_first_turn_already_has_the_town_tools(town_dir: Path, tmp_path: Path) -> None:
    town = assemble.open_town(load_settings(town_dir))
    try:
        token = town.agent_add(operator(), "mayor", "mayor", None).token
        sock = bind()
        port = sock.getsockname()[1]
        auth = {"Authorization": f"Bearer {token}"}
        server = {"type": "http", "url": f"http://127.0.0.1:{port}/mcp", "headers": auth}
        async with serve(http_app(town, "127.0.0.1", port), sock=sock):
            for run in range(RUNS):
                tools, init = await _first_turn_tools(server, tmp_path / f"home{run}", tmp_path)
                assert "mcp__gastown__bead_create" in tools, (run, init.get("mcp_servers"))
    finally:
        town.close()
