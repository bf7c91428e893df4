"""The goal and directive tools: the overseer states goals and directs the mayor; the mayor reads the directives
addressed to it and acknowledges, completes or refuses them.

Each directive is one of a fixed set of kinds (plan a goal, reprioritise, unblock or cancel a bead, change a
rig's polecat limit, pause or resume a rig, ask the human) and is tracked: issued -> acknowledged -> done |
refused. The same directive is never open twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from gastown_mcp.server.views import IDEMPOTENT, READ, WRITE
from gastown_mcp.town import Town
from gastown_mcp.town.directives import Directive, DirectiveIn, DirectiveKind
from gastown_mcp.town.goals import Goal


class GoalList(BaseModel):
    goals: list[Goal]


class DirectiveList(BaseModel):
    directives: list[Directive]
    hint: str = "directive_update ID state=acknowledged, then done (or refused with a note)"


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(description="State a goal for the town: what should be true once its work has landed.", annotations=WRITE)
    async def goal_add(
        text: Annotated[str, Field(min_length=1, max_length=8000)],
        rig: Annotated[str | None, Field(max_length=64)] = None,
        budget_usd: Annotated[float | None, Field(ge=0)] = None,
    ) -> Goal:
        return await run(lambda a: town.goal_add(a, text, rig, budget_usd))

    @mcp.tool(
        description="Goals with their convoys' progress and open directives (state: active, ...).", annotations=READ
    )
    async def goal_list(
        state: Literal["active", "achieved", "abandoned"] | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 20,
    ) -> GoalList:
        return GoalList(goals=await run(lambda a: town.goal_list(a, state, limit)))

    @mcp.tool(description="Close a goal by hand: achieved or abandoned, with a reason.", annotations=IDEMPOTENT)
    async def goal_update(
        id: Annotated[int, Field(ge=1)],
        state: Literal["achieved", "abandoned"],
        reason: Annotated[str, Field(max_length=2000)] = "",
    ) -> Goal:
        return await run(lambda a: town.goal_update(a, id, state, reason))

    @mcp.tool(
        description=(
            "Give the mayor a directive (escalate asks the human): plan_goal, reprioritise, unblock, cancel, "
            "set_max_polecats, pause_rig, resume_rig, escalate. The same directive is not issued twice while open."
        ),
        annotations=WRITE,
    )
    async def directive_issue(
        kind: DirectiveKind,
        reason: Annotated[str, Field(min_length=1, max_length=2000)],
        goal: Annotated[int | None, Field(ge=1)] = None,
        rig: Annotated[str | None, Field(max_length=64)] = None,
        bead: Annotated[str | None, Field(max_length=100)] = None,
        priority: Annotated[int | None, Field(ge=0, le=4)] = None,
        max_polecats: Annotated[int | None, Field(ge=0, le=1000)] = None,
        about: Annotated[str | None, Field(max_length=200)] = None,
        question: Annotated[str | None, Field(max_length=4000)] = None,
    ) -> Directive:
        given = DirectiveIn(
            kind=kind,
            reason=reason,
            goal=goal,
            rig=rig,
            bead=bead,
            priority=priority,
            max_polecats=max_polecats,
            about=about,
            question=question,
        )
        return await run(lambda a: town.directive_issue(a, given))

    @mcp.tool(
        description="Your directives, newest first (state: issued, acknowledged, done, refused).", annotations=READ
    )
    async def directive_list(
        state: Literal["issued", "acknowledged", "done", "refused"] | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 20,
    ) -> DirectiveList:
        return DirectiveList(directives=await run(lambda a: town.directive_list(a, state, limit)))

    @mcp.tool(
        description=(
            "Report on a directive: acknowledged when you take it, done when carried out (plan_goal: pass the "
            "convoy id), refused with why in note."
        ),
        annotations=IDEMPOTENT,
    )
    async def directive_update(
        id: Annotated[int, Field(ge=1)],
        state: Literal["acknowledged", "done", "refused"],
        note: Annotated[str, Field(max_length=2000)] = "",
        convoy: Annotated[str | None, Field(max_length=100)] = None,
    ) -> Directive:
        return await run(lambda a: town.directive_update(a, id, state, note, convoy))
