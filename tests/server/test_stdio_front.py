"""`gastown serve --as NAME` answers `initialize` from the SDK's own answer cached by an earlier start, before
the SDK loads (gastown_mcp/cli/stdio_front.py): the answer is the server's, the session after it is the
server's, the agent is checked first, and a cache from another version or one the server contradicts is never
sent twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from gastown_mcp.cli.stdio_front import CACHE_DIR, cache_key, stdio_args
from gastown_mcp.config import TOWN_FILE, Settings, default_town_toml
from gastown_mcp.models import Agent
from gastown_mcp.town import Town, operator

GASTOWN = str(Path(sys.executable).with_name("gastown"))


def serve(settings: Settings, name: str) -> StdioServerParameters:
    """`gastown serve --as NAME` on the fixtures' town (given the town.toml that marks a town)."""
    toml = settings.town_dir / TOWN_FILE
    if not toml.exists():
        toml.write_text(default_town_toml(settings.town.name, settings.town.prefix))
    return StdioServerParameters(command=GASTOWN, args=["serve", "--town", str(settings.town_dir), "--as", name])


async def _initialize(settings: Settings, name: str) -> tuple[dict[str, Any], list[str], bool]:
    """The InitializeResult the real client got, the tools it then lists, and whether a tool call works."""
    with anyio.fail_after(30):
        async with Client(serve(settings, name), mode="legacy") as c:
            result = c.session.initialize_result
            assert result is not None
            tools = [t.name for t in (await c.list_tools()).tools]
            ready = await c.call_tool("bead_ready", {})
    return result.model_dump(mode="json", by_alias=True, exclude_none=True), tools, not ready.is_error


def _cached(settings: Settings, role: str = "polecat") -> list[Path]:
    return sorted((settings.town_dir / CACHE_DIR).glob(f"{role}-*.json"))


async def test_the_fast_answer_is_the_servers_own_and_the_session_works_after_it(
    settings: Settings, crew: dict[str, Agent]
) -> None:
    assert _cached(settings) == []
    slow = await _initialize(settings, "polecat-1")  # no cache: the server answers, and its answer is kept
    (cache,) = _cached(settings)
    kept = json.loads(cache.read_text())
    assert kept["result"] == slow[0]
    fast = await _initialize(settings, "polecat-2")  # same role: answered from the cache
    assert fast == slow
    assert "bead_claim" in fast[1] and fast[2]
    assert json.loads(cache.read_text()) == kept  # confirmed by the server, not rewritten


async def test_the_front_sends_the_cached_answer_and_a_contradicted_one_ends_the_session_once(
    settings: Settings, crew: dict[str, Agent]
) -> None:
    real = await _initialize(settings, "polecat-1")
    (cache,) = _cached(settings)
    kept = json.loads(cache.read_text())
    wrong = {**kept, "result": {**kept["result"], "instructions": "not what the server says"}}
    cache.write_text(json.dumps(wrong))
    got: dict[str, Any] = {}
    with anyio.fail_after(30), pytest.raises(Exception):  # noqa: B017 - the server ends the session
        async with Client(serve(settings, "polecat-1"), mode="legacy") as c:
            got["instructions"] = c.instructions
            await c.list_tools()
    assert got["instructions"] == "not what the server says"  # the front answered, before the server
    assert json.loads(cache.read_text()) == kept  # the server's answer replaced the wrong one
    assert await _initialize(settings, "polecat-1") == real


async def test_a_cache_from_another_version_is_not_used_and_is_replaced(
    settings: Settings, crew: dict[str, Agent]
) -> None:
    real = await _initialize(settings, "polecat-1")
    (cache,) = _cached(settings)
    kept = json.loads(cache.read_text())
    stale = {
        "key": {**kept["key"], "gastown": "0.0.0-old"},
        "result": {**kept["result"], "instructions": "from an older gastown"},
    }
    cache.write_text(json.dumps(stale))
    assert await _initialize(settings, "polecat-1") == real
    assert json.loads(cache.read_text()) == kept


def test_the_cache_key_names_what_the_answer_depends_on() -> None:
    key = cache_key("mayor", "2025-06-18")
    assert key["role"] == "mayor" and key["protocol_version"] == "2025-06-18"
    assert key["gastown"] and "mcp " in key["sdk"] and key["server_source"]
    assert cache_key("polecat", "2025-06-18") != key and cache_key("mayor", "2025-11-25") != key


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("nobody", "error: no agent 'nobody'; list agents with `gastown agent list`"),
        ("polecat-2", "error: agent 'polecat-2' was removed; add it again with `gastown agent add`"),
    ],
)
async def test_an_unknown_or_removed_agent_is_refused_before_any_answer_even_with_a_cache(
    name: str, error: str, settings: Settings, town: Town, crew: dict[str, Agent]
) -> None:
    await _initialize(settings, "polecat-1")
    assert _cached(settings)
    town.agent_remove(operator(), "polecat-2")
    request = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": json.loads(_cached(settings)[0].read_text())["key"]["protocol_version"],
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    params = serve(settings, name)
    done = subprocess.run(
        [GASTOWN, *params.args], input=json.dumps(request) + "\n", capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr.strip()) == (3, "", error)


async def test_the_cached_answer_goes_out_before_the_sdk_or_typer_is_imported(
    settings: Settings, crew: dict[str, Agent]
) -> None:
    await _initialize(settings, "polecat-1")
    kept = json.loads(_cached(settings)[0].read_text())
    request = {
        "jsonrpc": "2.0",
        "id": "first",
        "method": "initialize",
        "params": {
            "protocolVersion": kept["key"]["protocol_version"],
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    # `gastown`'s own entry point, with the front's write noting which libraries were loaded at that moment
    code = (
        "import sys\n"
        "from gastown_mcp.cli import stdio_front\n"
        "write = stdio_front.Wire.write\n"
        "def noting(self, data):\n"
        "    sys.stderr.write(repr(sorted({'mcp', 'mcp_types', 'typer'} & set(sys.modules))) + '\\n')\n"
        "    write(self, data)\n"
        "stdio_front.Wire.write = noting\n"
        "from gastown_mcp.cli import main\n"
        "main()\n"
    )
    args = serve(settings, "polecat-1").args
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers == [{"jsonrpc": "2.0", "id": "first", "result": kept["result"]}]  # once: the server's dropped
    assert done.stderr.splitlines()[0] == "[]"


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["serve", "--as", "mayor"], ("mayor", None)),
        (["serve", "--town", "/t", "--as=mayor"], ("mayor", Path("/t"))),
        (["serve", "--as", "mayor", "--http"], None),  # the command reports what is wrong with these
        (["serve", "--as", "mayor", "--as", "other"], None),
        (["serve", "--as", "--town", "/t"], None),
        (["serve", "--as"], None),
        (["serve", "--town", "/t"], None),
        (["serve", "--as", "mayor", "--help"], None),
        (["status", "--as", "mayor"], None),
    ],
)
def test_the_front_takes_only_a_plain_stdio_serve(argv: list[str], parsed: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("GASTOWN_TOWN", raising=False)
    assert stdio_args(argv) == parsed
