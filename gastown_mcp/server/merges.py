"""The merge queue tools: list and read merge requests, retry an ended one, reject a queued one.

Landing is the town's own deterministic work (only the merge queue moves `main`); these tools let the
refinery and the mayor see the queue and steer it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from gastown_mcp.models import MergeRequest
from gastown_mcp.server.views import DESTRUCTIVE, IDEMPOTENT, READ
from gastown_mcp.town import Town

MergeStateName = Literal["queued", "testing", "merged", "conflicted", "failed", "rejected"]


class MergeRow(BaseModel):
    """A slim merge request row: what merge_list returns."""

    id: int
    rig: str
    bead_id: str
    state: str
    attempts: int
    landed: str | None = None


class MergeList(BaseModel):
    requests: list[MergeRow]
    hint: str = "merge_show ID for the detail and gate log"

    @classmethod
    def of(cls, found: list[MergeRequest]) -> MergeList:
        return cls(requests=[MergeRow(**r.model_dump(mode="json", include=set(MergeRow.model_fields))) for r in found])


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(description="Merge requests (handed-in work on its way to main), newest first.", annotations=READ)
    async def merge_list(
        rig: Annotated[str | None, Field(max_length=64)] = None,
        state: list[MergeStateName] = [],  # noqa: B006 - pydantic copies defaults
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
    ) -> MergeList:
        return MergeList.of(await run(lambda a: town.merge_list(a, rig=rig, state=state, limit=limit)))

    @mcp.tool(description="One merge request in full: commits, attempts, conflict or gate log tail.", annotations=READ)
    async def merge_show(id: Annotated[int, Field(ge=1)]) -> MergeRequest:
        return await run(lambda a: town.merge_show(a, id))

    @mcp.tool(description="Queue an ended merge request again (e.g. after a flaky gate).", annotations=IDEMPOTENT)
    async def merge_retry(id: Annotated[int, Field(ge=1)]) -> MergeRequest:
        return await run(lambda a: town.merge_retry(a, id))

    @mcp.tool(description="Reject a queued merge request; its bead goes back for rework.", annotations=DESTRUCTIVE)
    async def merge_reject(
        id: Annotated[int, Field(ge=1)], reason: Annotated[str, Field(min_length=1, max_length=2000)]
    ) -> MergeRequest:
        return await run(lambda a: town.merge_reject(a, id, reason))
