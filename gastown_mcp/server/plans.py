"""The plan tools: ask the refinery planner for a checked plan of beads (a convoy), and read a convoy's progress.

The plan is made by a model through the town's gateway and checked by the town before anything is written;
`dry_run` returns it for approval without creating anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from gastown_mcp.server.views import READ, WRITE
from gastown_mcp.town import Town
from gastown_mcp.town.plans import Convoy, PlanResult


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(
        description=(
            "Turn a goal into a checked plan of beads with dependencies and verify commands, created as a convoy "
            "in one step (dry_run: only return the plan). directive: the plan_goal directive this carries out "
            "(taken and reported done with the convoy in the same call)."
        ),
        annotations=WRITE,
    )
    async def plan_create(
        goal: Annotated[str, Field(min_length=1, max_length=8000)],
        rig: Annotated[str | None, Field(max_length=64)] = None,
        dry_run: bool = False,
        directive: Annotated[int | None, Field(ge=1)] = None,
    ) -> PlanResult:
        if directive is None:
            return await run(lambda a: town.plan_create(a, goal, rig, dry_run))
        return await run(lambda a: town.directive_plan(a, directive, goal, rig, dry_run))

    @mcp.tool(
        description="A convoy (a plan's epic): its beads and how many are open, in progress, merged.", annotations=READ
    )
    async def convoy_show(id: Annotated[str, Field(min_length=1, max_length=100)]) -> Convoy:
        return await run(lambda a: town.convoy_show(a, id))
