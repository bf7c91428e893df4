"""The merge queue tools through the SDK's real `Client`: who sees them, and what list, show, reject and retry do."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest
from mcp import Client

from gastown_mcp import rigs
from gastown_mcp.models import Agent, AgentState, BeadStatus
from gastown_mcp.server.client import result_text
from gastown_mcp.town import Town

Connect = Callable[[Agent], AbstractAsyncContextManager[Client]]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c", "safe.directory=*"]


@pytest.fixture
def handed_in(town: Town, operator: Agent, crew: dict[str, Agent], tmp_path: Path) -> str:
    """A bead on rig `web` that polecat-9 completed with a commit: done, awaiting merge, one request queued."""
    source = tmp_path / "web"
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("web\n")
    subprocess.run([*GIT, "-C", str(source), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(source), "commit", "-qm", "initial"], check=True)
    town.rig_add(operator, "web", str(source))
    bead = town.bead_create(operator, "add a page")
    town.agent_add(operator, "polecat-9", "polecat", "web")
    repo = rigs.create_agent_repo(rigs.get_rig(town.settings.town_dir, "web"), "polecat-9", bead.id)
    agent = town.set_agent_state(
        operator, "polecat-9", AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
    )
    town.bead_claim(agent, bead.id)
    (repo.path / "page.html").write_text("<p>hi</p>\n")
    subprocess.run([*GIT, "-C", str(repo.path), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(repo.path), "commit", "-qm", "add a page"], check=True)
    town.bead_complete(town.agent("polecat-9"), bead.id, "added the page")
    return bead.id


async def call(client: Client, tool: str, args: dict[str, object]) -> dict[str, object]:
    with anyio.fail_after(10):
        result = await client.call_tool(tool, args)
    assert not result.is_error, result_text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_only_the_refinery_mayor_deacon_and_overseer_see_the_merge_tools(
    connect: Connect, crew: dict[str, Agent]
) -> None:
    seen = {}
    for name in ("refinery", "mayor", "deacon", "overseer", "polecat-1", "witness", "dog-1"):
        async with connect(crew[name]) as c:
            seen[name] = {t.name for t in (await c.list_tools()).tools if t.name.startswith("merge_")}
    admin = {"merge_list", "merge_show", "merge_retry", "merge_reject"}
    assert seen == {
        "refinery": admin,
        "mayor": admin,
        "overseer": admin,
        "deacon": {"merge_list", "merge_show"},
        "polecat-1": set(),
        "witness": set(),
        "dog-1": set(),
    }
    async with connect(crew["polecat-1"]) as c:
        refused = await c.call_tool("merge_list", {})
    assert refused.is_error and "may not call merge_list" in result_text(refused)


async def test_the_refinery_lists_and_shows_a_queued_request_and_the_mayor_rejects_then_retries_it(
    connect: Connect, crew: dict[str, Agent], town: Town, operator: Agent, handed_in: str
) -> None:
    async with connect(crew["refinery"]) as c:
        listed = await call(c, "merge_list", {"state": ["queued"]})
        [row] = listed["requests"]
        assert (row["bead_id"], row["state"]) == (handed_in, "queued")
        shown = await call(c, "merge_show", {"id": row["id"]})
    assert shown["ref"] == f"refs/polecat/polecat-9/{handed_in}" and len(str(shown["tip"])) == 40

    async with connect(crew["mayor"]) as c:
        rejected = await call(c, "merge_reject", {"id": row["id"], "reason": "split the page from the route"})
        assert rejected["state"] == "rejected"
        back = town.bead_show(operator, handed_in)
        assert back.status is BeadStatus.open and "split the page from the route" in back.comments[-1].body
        retried = await call(c, "merge_retry", {"id": row["id"]})
    assert retried["state"] == "queued"
    again = town.bead_show(operator, handed_in)
    assert (again.status, again.awaiting_merge) == (BeadStatus.done, True)


async def test_a_bad_merge_request_id_is_a_clear_error(connect: Connect, crew: dict[str, Agent]) -> None:
    async with connect(crew["refinery"]) as c:
        missing = await c.call_tool("merge_show", {"id": 999})
        empty_reason = await c.call_tool("merge_reject", {"id": 1, "reason": ""})
    assert missing.is_error and "no merge request 999" in result_text(missing)
    assert empty_reason.is_error
