"""The mayor's Claude Code session is cut down to the town's tools, and still plans and acknowledges.

`sandbox/run-claude.sh` (the image's launcher) runs on this machine with the mayor's container command's
arguments: real Claude Code -> the town's gateway (the mayor's own key, metered) -> the scripted stand-in, with
the town's MCP server over HTTP. A mayor started with nothing to do ends without a model call; the directive
that resumes it starts its session (under the recorded id), the next one continues it, and each is carried out
by one plan_create call. What Claude Code sent the model is read back from the stand-in: the town's tools and no
built-in tool, a short system prompt instead of Claude Code's own.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import unavailable
from planning import planning_services

from gastown_mcp.config import Settings
from gastown_mcp.models import Agent, Role
from gastown_mcp.server.client import serve_http
from gastown_mcp.standin import Standin
from gastown_mcp.standin.conversation import count_tokens
from gastown_mcp.standin.overseer import MAYOR_TOOL, loop_models
from gastown_mcp.store import Store
from gastown_mcp.town import Town, mayor
from gastown_mcp.town.directives import DirectiveIn, DirectiveKind
from gastown_mcp.town.roles import tools_for

pytestmark = pytest.mark.claude

ROOT = Path(__file__).resolve().parent.parent
CLAUDE_DIR = ROOT / ".cache/npm-claude/node_modules/@anthropic-ai/claude-code-linux-x64"
# What every request carries before its conversation: Claude Code's default system prompt and built-in tools
# alone are ~17k tokens (with the mayor's town tools ~20k); the town tools and the short prompt are ~3.3k.
MAX_FIXED_TOKENS = 4000


def _mayor_requests(standin: Standin) -> list[dict[str, object]]:
    return [r.body for r in standin.requests if r.path == "/v1/messages" and MAYOR_TOOL in str(r.body.get("tools"))]


def _run_mayor(
    tmp_path: Path, mcp_url: str, gateway: str, token: str, gateway_key: str, session: str, prompt: str | None
) -> subprocess.CompletedProcess[str]:
    """`prompt` None: a start with nothing to do (GASTOWN_WAIT); else a resume with it as the next turn."""
    """The image's launcher with the mayor's command's arguments, as the container runs it."""
    opt = tmp_path / "opt"
    if not opt.exists():
        opt.mkdir()
        (opt / "prompts").symlink_to(ROOT / "gastown_mcp" / "prompts")
        (opt / "settings.json").symlink_to(ROOT / "sandbox" / "settings.json")
        (tmp_path / "home").mkdir()
    env = {
        "HOME": str(tmp_path / "home"),
        "PATH": f"{CLAUDE_DIR}:/usr/local/bin:/usr/bin:/bin",
        "GASTOWN_OPT": str(opt),
        "GASTOWN_AGENT": "mayor",
        "GASTOWN_ROLE": "mayor",
        "GASTOWN_MCP_URL": mcp_url,
        "GASTOWN_TOKEN": token,
        "GASTOWN_SESSION_ID": session,
        "ANTHROPIC_BASE_URL": gateway,
        "ANTHROPIC_AUTH_TOKEN": gateway_key,
        # What the agent image sets (Dockerfile ENV).
        "IS_SANDBOX": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "ENABLE_TOOL_SEARCH": "false",
        **({"GASTOWN_RESUME": session, "GASTOWN_PROMPT": prompt} if prompt else {"GASTOWN_WAIT": "1"}),
    }
    command = [str(ROOT / "sandbox" / "run-claude.sh"), *mayor.COMMAND[1:]]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)


def test_the_mayors_command_gives_claude_code_no_built_in_tools_and_its_own_short_system_prompt(
    town: Town, operator: Agent
) -> None:
    started = town.mayor_start(operator)
    command = started.metadata["command"]
    assert command == list(mayor.COMMAND) and command[0] == mayor.AGENT_COMMAND
    assert started.metadata["wait"] is True and "task" not in started.metadata  # nothing waits: it ends at once
    assert command[command.index("--tools") + 1] == ""
    assert command[command.index("--system-prompt") + 1] == mayor.SYSTEM_PROMPT
    hidden = command[command.index("--disallowedTools") + 1].split(",")
    mayors_tools = {mayor.TOOL_PREFIX + tool for tool in tools_for(Role.mayor)}
    assert hidden and set(hidden) < mayors_tools  # each a real tool of the role, and never all of them
    assert mayor.TOOL_PREFIX + "plan_create" not in hidden and mayor.TOOL_PREFIX + "directive_update" not in hidden


def test_a_mayor_session_with_only_the_town_tools_still_plans_and_acknowledges_its_directives(
    store: Store, settings: Settings, operator: Agent, tmp_path: Path
) -> None:
    if not (CLAUDE_DIR / "claude").exists():
        unavailable(f"Claude Code is not installed at {CLAUDE_DIR}: run `make claude`")
    os.environ.pop("ANTHROPIC_API_KEY", None)
    with planning_services(store, settings, loop_models()) as (town, standin, gateway), serve_http(town) as mcp:
        creds = town.agent_add(operator, "mayor", "mayor")
        session = str(uuid.uuid4())

        def directive(text: str) -> int:
            goal = town.goal_add(operator, text)
            reason = f"goal {goal.id} has no plan"
            return town.directive_issue(
                operator, DirectiveIn(kind=DirectiveKind.plan_goal, goal=goal.id, reason=reason)
            ).id

        def run(prompt: str | None) -> None:
            done = _run_mayor(tmp_path, mcp, gateway, creds.token, creds.gateway_key, session, prompt)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

        # Started with nothing to do: the launcher ends without a model call.
        run(None)
        assert _mayor_requests(standin) == []
        # The first directive resumes it: the session has no transcript yet, so it starts under the town's id.
        # Each directive is carried out by one call (plan_create with the directive), then the turn ends.
        done: list[int] = []
        for text in ("Greet people by name", "Say goodbye by name"):
            directive_id = directive(text)
            done.append(directive_id)
            asked = len(_mayor_requests(standin))
            [nudge] = [n for n in town.nudges(operator, to="mayor") if f"DIRECTIVE #{directive_id}" in n.body]
            run(nudge.nudge_line())
            requests = _mayor_requests(standin)
            assert len(requests) - asked == 2, [r["messages"] for r in requests[asked:]]
            resumed = requests[asked]["messages"]  # type: ignore[index]
            # The second run continues the first's session: its first request carries the first's turns.
            earlier_turns = any(m["role"] == "assistant" for m in resumed)  # type: ignore[attr-defined, index]
            assert earlier_turns == (len(done) == 2), resumed

        first, second = done
        for directive_id in done:
            shown = town.directive_show(operator, directive_id)
            assert shown.state.value == "done", shown
            assert shown.goal is not None and town.goal_show(operator, shown.goal).convoys
        events = [e for e in town.events(operator, limit=1000) if e.actor == "mayor"]
        verbs = [(e.verb, (e.after or {}).get("directive")) for e in events]
        # Each directive acknowledged, then planned, then reported done.
        assert [v for v in verbs if v[0] in ("directive.acknowledged", "plan.created", "directive.done")] == [
            ("directive.acknowledged", first),
            ("plan.created", None),
            ("directive.done", first),
            ("directive.acknowledged", second),
            ("plan.created", None),
            ("directive.done", second),
        ]
        # Every request went through the gateway under the mayor's own key, metered as the mayor's.
        [usage] = [r for r in town.usage_by_role(operator) if r.role == "mayor"]
        assert usage.requests == len(requests) == 4

    for body in requests:
        tools = [str(t["name"]) for t in body["tools"]]  # type: ignore[index, union-attr]
        assert tools and all(name.startswith("mcp__gastown__") for name in tools), tools
        assert not {mayor.TOOL_PREFIX + t for t in mayor.HIDDEN_TOOLS} & set(tools)  # hidden from the AI mayor
        system = str(body["system"])
        assert mayor.SYSTEM_PROMPT in system and "# You are the mayor of Gas Town" in system
        assert "You are an agent working with the user" not in system  # Claude Code's own prompt is replaced
        assert count_tokens(body["tools"]) + count_tokens(body["system"]) < MAX_FIXED_TOKENS
