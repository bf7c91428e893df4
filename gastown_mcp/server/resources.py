"""MCP resources (`bead://{id}`, `town://status`) and one prompt per role, read from `gastown_mcp/prompts/`.

`role_prompt` is the one reader of those prompt files for the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from gastown_mcp.models import Agent, Role
from gastown_mcp.town import Town


def role_prompt(role: Role) -> str:
    return files("gastown_mcp").joinpath("prompts", f"{role.value}.md").read_text()


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    async def read(fn: Callable[[Agent], str]) -> str:
        try:
            return await run(fn)
        except ToolError as exc:
            raise ResourceError(str(exc)) from exc

    @mcp.resource("bead://{id}", name="bead", description="A bead as JSON", mime_type="application/json")
    async def bead_resource(id: str) -> str:
        return await read(lambda a: town.bead_show(a, id).model_dump_json(indent=2))

    @mcp.resource(
        "town://status", name="town-status", description="Town overview as JSON", mime_type="application/json"
    )
    async def status_resource() -> str:
        return await read(lambda a: json.dumps(town.status(a).model_dump(mode="json"), indent=2))

    for role in Role:
        _add_role_prompt(mcp, role)


def _add_role_prompt(mcp: MCPServer, role: Role) -> None:
    text = role_prompt(role)

    @mcp.prompt(name=role.value, description=f"The rules of the {role.value} role")
    def prompt() -> str:
        return text
