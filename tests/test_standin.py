"""The scripted stand-in: Messages API wire format (JSON, SSE), usage arithmetic, recording, scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam

from gastown_mcp.serving import serve
from gastown_mcp.standin import (
    MODEL_ID,
    SERVER_HEADER,
    Conversation,
    Echo,
    Fails,
    Hello,
    Polecat,
    Sequenced,
    Text,
    ToolCall,
    Turn,
    build_standin,
    count_tokens,
    script_named,
)
from gastown_mcp.standin.__main__ import main
from gastown_mcp.standin.polecat import fill_arguments, find_bead_id, handed_back, target_file

HI: list[MessageParam] = [{"role": "user", "content": "hi there"}]


async def test_a_json_reply_names_itself_and_reports_usage() -> None:
    standin = build_standin(Hello())
    async with serve(standin.app) as url:
        raw = await anthropic.AsyncAnthropic(base_url=url, api_key="k").messages.with_raw_response.create(
            model="any-model", max_tokens=50, messages=HI
        )
    msg = await raw.parse()
    assert raw.headers["server"] == SERVER_HEADER and msg.model == MODEL_ID == "scripted-standin"
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from the scripted stand-in."
    assert msg.usage.output_tokens == 9  # 33 bytes / 4, rounded up
    assert msg.usage.input_tokens == standin.requests[0].usage["input_tokens"]  # type: ignore[index]


async def test_a_streamed_reply_sends_every_event_kind_in_order() -> None:
    standin = build_standin(
        Sequenced([Turn([Text("Reading it."), ToolCall("Bash", {"command": "ls -la"})])]), chunk_chars=4
    )
    body = {"model": "m", "max_tokens": 50, "stream": True, "messages": HI}
    async with serve(standin.app) as url, httpx2.AsyncClient() as http:
        r = await http.post(url + "/v1/messages", json=body)
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    deltas = [json.loads(line[6:]) for line in r.text.splitlines() if '"content_block_delta"' in line]
    assert "".join(d["delta"]["partial_json"] for d in deltas if d["index"] == 1) == '{"command": "ls -la"}'
    assert "".join(d["delta"]["text"] for d in deltas if d["index"] == 0) == "Reading it."


async def test_the_anthropic_stream_helper_rebuilds_tool_calls() -> None:
    call = ToolCall("mcp__gastown__bead_claim", {"id": "gt-4f2a"})
    async with serve(build_standin(Sequenced([Turn([call])])).app) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k")
        async with client.messages.stream(model="m", max_tokens=50, messages=HI) as stream:
            final = await stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
    assert final.content[0].input == {"id": "gt-4f2a"}
    assert final.usage.output_tokens > 1


async def test_cache_control_writes_then_reads_the_prefix() -> None:
    standin = build_standin(Echo())
    system = [{"type": "text", "text": "rules " * 100, "cache_control": {"type": "ephemeral"}}]
    async with serve(standin.app) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k")
        first = await client.messages.create(model="m", max_tokens=9, system=system, messages=HI)  # type: ignore[arg-type]
        second = await client.messages.create(model="m", max_tokens=9, system=system, messages=HI)  # type: ignore[arg-type]
    prefix = count_tokens(system[0])
    assert first.usage.cache_creation_input_tokens == prefix and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == prefix and second.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens == second.usage.input_tokens > 0


async def test_count_tokens_counts_the_whole_input() -> None:
    standin = build_standin(Hello())
    async with serve(standin.app) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k")
        counted = await client.messages.count_tokens(model="m", messages=HI)
        made = await client.messages.create(model="m", max_tokens=5, messages=HI)
    assert counted.input_tokens == made.usage.input_tokens


async def test_every_request_is_recorded_and_listed() -> None:
    standin = build_standin(Echo())
    async with serve(standin.app) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k")
        reply = await client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "nudge!"}])
        async with httpx2.AsyncClient() as http:
            listed = (await http.get(url + "/_standin/requests")).json()
            await http.delete(url + "/_standin/requests")
    assert reply.content[0].type == "text" and reply.content[0].text == "echo: nudge!"
    assert listed[0]["body"]["messages"][0]["content"] == "nudge!" and listed[0]["usage"]["output_tokens"] > 0
    assert standin.requests == []


async def test_a_wrong_key_is_refused_when_a_key_is_expected() -> None:
    async with serve(build_standin(Hello(), expected_key="right").app) as url:
        with pytest.raises(anthropic.AuthenticationError):
            await anthropic.AsyncAnthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
                model="m", max_tokens=5, messages=HI
            )


async def test_an_error_script_answers_in_anthropic_format() -> None:
    async with serve(build_standin(Fails(402)).app) as url:
        with pytest.raises(anthropic.PaymentRequiredError) as err:
            await anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0).messages.create(
                model="m", max_tokens=5, messages=HI
            )
    message = "scripted stand-in error 402 (billing_error)"
    assert err.value.body == {"type": "error", "error": {"type": "billing_error", "message": message}}


def test_scripts_are_found_by_name_and_unknown_names_are_refused() -> None:
    assert isinstance(script_named("polecat"), Polecat) and isinstance(script_named("error:529"), Fails)
    with pytest.raises(ValueError, match="unknown stand-in script"):
        script_named("gpt")
    assert main(["--script", "gpt"]) == 2


def test_the_cli_prints_its_help() -> None:
    done = subprocess.run([sys.executable, "-m", "gastown_mcp.standin", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--script" in done.stdout


def test_the_cli_answers_at_once_on_the_url_it_prints() -> None:
    command = [sys.executable, "-m", "gastown_mcp.standin", "--port", "0", "--script", "echo"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as standin:
        try:
            assert standin.stdout is not None
            url = standin.stdout.readline().split(" on ")[-1].strip()  # listening before this line is printed
            client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0, timeout=30)
            reply = client.messages.create(model="m", max_tokens=5, messages=HI)
        finally:
            standin.terminate()
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    assert reply.content[0].type == "text" and reply.content[0].text == "echo: hi there"


# -- the polecat script, turn by turn --------------------------------------------------------------
def _tool(name: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"name": name, "input_schema": {"type": "object", "properties": props, "required": required}}


TOOLS = [
    _tool("mcp__gastown__bead_show", {"id": {"type": "string"}}, ["id"]),
    _tool("mcp__gastown__bead_claim", {"id": {"type": "string"}}, []),
    _tool(
        "mcp__gastown__bead_complete",
        {"id": {"type": "string"}, "summary": {"type": "string"}, "commit": {"type": "string"}},
        ["id", "summary"],
    ),
    _tool("Bash", {"command": {"type": "string"}}, ["command"]),
    _tool("Write", {"file_path": {"type": "string"}, "content": {"type": "string"}}, ["file_path", "content"]),
]
SYSTEM = "You are Claude Code.\n<env>\nWorking directory: /work/repo\n</env>"


def _play(turns: list[tuple[str, bool]] | None = None) -> list[Turn]:
    """Run the polecat script, answering each tool call with the given (result text, is_error)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "You are polecat-1. Work bead gt-4f2a now."}]
    answers = list(turns or [])
    played = []
    for _ in range(8):
        turn = Polecat().next_turn(Conversation({"system": SYSTEM, "tools": TOOLS, "messages": messages}))
        played.append(turn)
        calls = [b for b in turn.blocks if isinstance(b, ToolCall)]
        if not calls:
            break
        text, is_error = answers.pop(0) if answers else ("ok", False)
        content = [{"type": "text", "text": b.text} if isinstance(b, Text) else
                   {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input} for b in turn.blocks]  # fmt: skip
        messages.append({"role": "assistant", "content": content})
        result = {"type": "tool_result", "tool_use_id": calls[0].id, "content": text, "is_error": is_error}
        messages.append({"role": "user", "content": [result]})
    return played


def test_the_polecat_shows_claims_writes_commits_and_completes() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    played = _play([('{"id": "gt-4f2a", "title": "Fix it"}', False), ('{"title": "Fix it"}', False), ("written", False),
                    (f"[main] done\n{sha}\n", False), ("done", False)])  # fmt: skip
    calls = [next(b for b in t.blocks if isinstance(b, ToolCall)) for t in played[:-1]]
    assert [c.name for c in calls] == [
        "mcp__gastown__bead_show",
        "mcp__gastown__bead_claim",
        "Write",
        "Bash",
        "mcp__gastown__bead_complete",
    ]
    assert calls[0].input == {"id": "gt-4f2a"}
    assert calls[2].input["file_path"] == "/work/repo/gt-4f2a.md" and "# Fix it" in calls[2].input["content"]
    assert "git add -- gt-4f2a.md" in calls[3].input["command"]
    assert calls[4].input["commit"] == sha and calls[4].input["id"] == "gt-4f2a"
    final = played[-1].blocks[0]
    assert isinstance(final, Text) and final.text.startswith("Bead gt-4f2a is complete")


def test_the_polecat_reports_a_tool_error_and_ends() -> None:
    played = _play([("ok", False), ("bead gt-4f2a is claimed by polecat-3 until 12:04", True)])
    assert len(played) == 3
    final = played[-1].blocks[0]
    assert isinstance(final, Text) and "bead_claim call for bead gt-4f2a failed" in final.text
    assert "claimed by polecat-3" in final.text


def test_the_polecat_stops_when_git_prints_no_commit() -> None:
    played = _play([("{}", False), ("ok", False), ("ok", False), ("nothing to commit", False)])
    final = played[-1].blocks[0]
    assert isinstance(final, Text) and "no commit hash" in final.text


def test_the_polecat_answers_side_requests_without_tools() -> None:
    turn = Polecat().next_turn(Conversation({"messages": [{"role": "user", "content": "Write a title"}]}))
    assert [type(b) for b in turn.blocks] == [Text]


def test_bead_ids_are_found_in_the_prompt() -> None:
    def found(text: str) -> str | None:
        return find_bead_id(Conversation({"messages": [{"role": "user", "content": text}]}))

    assert found("Work bead gt-abcd please (read-only files)") == "gt-abcd"
    assert found("take gt-4f2a.1 next; see claude-code docs") == "gt-4f2a.1"
    assert found("nothing to do with read-only claude-code") is None


def test_arguments_follow_each_tools_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"bead_id": {"type": "string"}, "result": {"$ref": "#/$defs/R"}},
        "$defs": {"R": {"type": "object", "properties": {"summary": {}, "commit": {}, "branch": {}}}},
    }
    args = fill_arguments(schema, {"id": "gt-1", "summary": "s", "commit": "c"})
    assert args == {"bead_id": "gt-1", "result": {"summary": "s", "commit": "c"}}


SHA = "0123456789abcdef0123456789abcdef01234567"
SHARED_BEAD = json.dumps(
    {"id": "gt-4f2a", "title": "Note it", "description": "Note it: append one line.\nfile: NOTES.md", "comments": []}
)
HANDED_BACK = json.dumps(
    {
        "id": "gt-4f2a",
        "title": "Note it",
        "description": "Note it: append one line.\nfile: NOTES.md",
        "attempts": 1,
        "comments": [
            "refinery: Merge request 2 could not go onto main (at 63e4b44fb3): conflicts with main at 63e4b44fb3 in "
            "NOTES.md. The next polecat starts from this work (0a1b2c3d4e); rebase it onto main (`git rebase main`), "
            "resolve the conflicts in NOTES.md, commit, and complete the bead again."
        ],
    }
)


def _calls(played: list[Turn]) -> list[ToolCall]:
    return [b for t in played for b in t.blocks if isinstance(b, ToolCall)]


def test_a_bead_that_names_a_file_gets_one_line_appended_to_it() -> None:
    played = _play([(SHARED_BEAD, False), ("{}", False), ("", False), (f"{SHA}\n", False), ("done", False)])
    calls = _calls(played)
    assert [c.name for c in calls] == [
        "mcp__gastown__bead_show",
        "mcp__gastown__bead_claim",
        "Bash",
        "Bash",
        "mcp__gastown__bead_complete",
    ]
    assert calls[2].input["command"] == "printf '%s\\n' '- gt-4f2a: Note it' >> NOTES.md"
    assert "git add -- NOTES.md" in calls[3].input["command"] and "gt-4f2a.md" not in calls[3].input["command"]
    assert calls[4].input["commit"] == SHA and "NOTES.md" in calls[4].input["summary"]


def test_a_handed_back_bead_is_rebased_onto_main_and_completed_without_writing_again() -> None:
    played = _play([(HANDED_BACK, False), ("{}", False), (f"Successfully rebased\n{SHA}\n", False), ("done", False)])
    calls = _calls(played)
    assert [c.name for c in calls] == [
        "mcp__gastown__bead_show",
        "mcp__gastown__bead_claim",
        "Bash",
        "mcp__gastown__bead_complete",
    ]
    assert "rebase main" in calls[2].input["command"] and "printf" not in calls[2].input["command"]  # no 2nd append
    assert calls[3].input["commit"] == SHA and "Rebased" in calls[3].input["summary"]
    final = played[-1].blocks[0]
    assert isinstance(final, Text) and final.text.startswith("Bead gt-4f2a is complete")


def test_a_rebase_that_prints_no_commit_stops_without_completing() -> None:
    played = _play([(HANDED_BACK, False), ("{}", False), ("fatal: invalid upstream 'main'", False)])
    assert [c.name for c in _calls(played)][-1] == "Bash"
    final = played[-1].blocks[0]
    assert isinstance(final, Text) and "git rebase for bead gt-4f2a printed no commit hash" in final.text


def test_the_rebase_step_keeps_both_sides_of_an_append_only_conflict(tmp_path: Path) -> None:
    """The command the script sends, run by a real git: the second of two appends to one file lands on top."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}

    def sh(command: str) -> str:
        done = subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    git = "git -c user.name=t -c user.email=t@t"
    sh(f"git init -q -b main && printf '# Notes\\n\\n' > NOTES.md && git add . && {git} commit -qm initial")
    sh(f"git checkout -qb polecat/b && echo '- gt-b: B' >> NOTES.md && {git} commit -qam b")
    sh(f"git checkout -q main && echo '- gt-a: A' >> NOTES.md && {git} commit -qam a && git checkout -q polecat/b")
    played = _play([(HANDED_BACK, False), ("{}", False)])
    out = sh(_calls(played)[2].input["command"])

    head = sh("git rev-parse HEAD").strip()
    assert head in out and sh("git log --format=%s main..HEAD").split() == ["b"]
    assert (tmp_path / "NOTES.md").read_text() == "# Notes\n\n- gt-a: A\n- gt-b: B\n"
    assert sh("git status --porcelain") == ""


def test_the_file_a_bead_names_must_be_a_relative_path_inside_the_repository() -> None:
    def named(description: str) -> str | None:
        return target_file(json.dumps({"description": description}))

    assert named("Append a line.\nfile: docs/NOTES.md\n") == "docs/NOTES.md"
    assert named("Append a line.\n  file: NOTES.md  ") == "NOTES.md"
    assert named("file: ../outside.md") is None and named("file: /etc/passwd") is None
    assert named("Mention the file: NOTES.md in the README") is None
    assert target_file('{"description": "x\\nfile: NOTES.md", truncated') == "NOTES.md"  # not JSON: the raw text


def test_only_a_merge_queue_comment_asking_for_a_rebase_marks_a_bead_handed_back() -> None:
    assert handed_back(HANDED_BACK) and not handed_back(SHARED_BEAD)
    assert not handed_back(json.dumps({"description": "then run `git rebase main`", "comments": []}))
