"""The budget tools: set token/USD budgets for an agent, a rig or the town, read them, and report usage.

Metering happens in the gateway; these tools only read and set what `Town` keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from gastown_mcp.server.views import IDEMPOTENT, READ, Budgets, UsageReport
from gastown_mcp.town import Town
from gastown_mcp.town.budgets import BudgetStatus


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(
        description="Set a token and/or USD budget for an agent, a rig or the whole town.", annotations=IDEMPOTENT
    )
    async def town_budget_set(
        scope: Literal["agent", "rig", "town"],
        name: Annotated[str | None, Field(max_length=64, description="agent or rig; omit for town")] = None,
        tokens: Annotated[int | None, Field(ge=0)] = None,
        usd: Annotated[float | None, Field(ge=0)] = None,
    ) -> BudgetStatus:
        return await run(lambda a: town.budget_set(a, scope, name, tokens=tokens, usd=usd))

    @mcp.tool(description="Budgets with what is spent and what remains.", annotations=READ)
    async def town_budget(
        scope: Literal["agent", "rig", "town"] | None = None, name: Annotated[str | None, Field(max_length=64)] = None
    ) -> Budgets:
        return Budgets(budgets=await run(lambda a: town.budget(a, scope, name)))

    @mcp.tool(description="Model usage per agent: requests, tokens by kind, USD, remaining.", annotations=READ)
    async def town_usage(agent: Annotated[str | None, Field(max_length=40)] = None) -> UsageReport:
        return UsageReport(agents=await run(lambda a: town.usage(a, agent)))
