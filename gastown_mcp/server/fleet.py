"""The fleet tools: spawn an agent in its own container, stop one, and sling a bead onto an agent's hook.

Containers are `Town`'s business; these tools only translate arguments (e.g. `LimitsIn` to spawn limits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from gastown_mcp.models import Agent
from gastown_mcp.server.views import DESTRUCTIVE, WRITE, BeadId, LimitsIn
from gastown_mcp.town import Town


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(
        description="Spawn an agent in its own container (optionally on a rig, with a bead on its hook).",
        annotations=WRITE,
    )
    async def town_spawn(
        role: Literal["polecat", "refinery", "deacon", "dog"] = "polecat",
        rig: Annotated[str | None, Field(max_length=64)] = None,
        bead: BeadId | None = None,
        command: Annotated[list[str], Field(max_length=64, description="program to run instead of Claude Code")] = [],  # noqa: B006
        limits: LimitsIn | None = None,
    ) -> Agent:
        def go(a: Agent) -> Agent:
            lim = town.spawn_limits(role, **limits.model_dump(exclude_none=True)) if limits is not None else None
            return town.spawn(a, role, rig=rig, bead=bead, command=command, limits=lim)

        return await run(go)

    @mcp.tool(
        description="Stop an agent's container; its beads go back to the queue, its branch is kept.",
        annotations=DESTRUCTIVE,
    )
    async def town_stop(
        agent: Annotated[str, Field(max_length=40)], reason: Annotated[str, Field(max_length=2000)] = ""
    ) -> Agent:
        return await run(lambda a: town.stop(a, agent, reason))

    @mcp.tool(description="Put a bead on an agent's hook; a rig name spawns a polecat for it.", annotations=WRITE)
    async def town_sling(bead: BeadId, to: Annotated[str, Field(max_length=64, description="agent or rig")]) -> Agent:
        return await run(lambda a: town.sling(a, bead, to))
