"""`gastown serve --as NAME` over stdio in a real subprocess, driven by the SDK's `Client`."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from gastown_mcp.config import TOWN_FILE, Settings, default_town_toml
from gastown_mcp.models import Agent, Role
from gastown_mcp.server.client import nudges_in, result_text
from gastown_mcp.store import Store
from gastown_mcp.town import Town, roles

GASTOWN = str(Path(sys.executable).with_name("gastown"))


def serve(settings: Settings, name: str) -> StdioServerParameters:
    """The command Claude Code would run (`claude mcp add gastown -- gastown serve --as NAME`)."""
    toml = settings.town_dir / TOWN_FILE
    if not toml.exists():  # the fixtures' town has defaults; the CLI wants the file that marks a town
        toml.write_text(default_town_toml(settings.town.name, settings.town.prefix))
    return StdioServerParameters(command=GASTOWN, args=["serve", "--town", str(settings.town_dir), "--as", name])


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_polecat_works_a_bead_over_stdio(
    mode: str, settings: Settings, town: Town, crew: dict[str, Agent], store: Store
) -> None:
    bead = town.bead_create(crew["mayor"], "Over stdio")
    town.nudge(crew["mayor"], "polecat-1", "stdio works")
    with anyio.fail_after(30):
        async with Client(serve(settings, "polecat-1"), mode=mode) as c:  # type: ignore[arg-type]
            listed = sorted(t.name for t in (await c.list_tools()).tools)
            claimed = await c.call_tool("bead_claim", {})
            refused = await c.call_tool("bead_link", {"id": bead.id, "other": bead.id})
            done = await c.call_tool("bead_complete", {"id": bead.id, "summary": "done via stdio"})
            prompt = await c.get_prompt("polecat")
            shown = (await c.read_resource(f"bead://{bead.id}")).contents[0]
    assert listed == sorted(roles.tools_for(Role.polecat))
    assert not claimed.is_error and claimed.structured_content["assignee"] == "polecat-1"  # type: ignore[index]
    assert nudges_in(claimed) == ["NUDGE from mayor (#1): stdio works"]
    assert refused.is_error and result_text(refused) == "polecat-1 (polecat) may not call bead_link"
    assert not done.is_error and nudges_in(done) == []
    assert "GUPP" in prompt.messages[0].content.text  # type: ignore[union-attr]
    assert '"status": "done"' in shown.text  # type: ignore[union-attr]
    assert store.beads.get(bead.id).result.summary == "done via stdio"  # type: ignore[union-attr]


async def test_serving_stdio_as_an_unknown_agent_fails_to_connect(settings: Settings, crew: dict[str, Agent]) -> None:
    with anyio.fail_after(30), pytest.raises(Exception):  # noqa: B017 - the process exits before the handshake
        async with Client(serve(settings, "nobody")) as c:
            await c.list_tools()
