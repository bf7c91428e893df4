"""The `bead_*` tools: create, read, claim, update, comment on, complete, release and link beads.

Each tool is a thin call into `Town` through `run`, which acts as the caller and turns domain errors into
tool errors; results come back as the slim views in `views`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from gastown_mcp.models import Dep
from gastown_mcp.server.views import (
    DESTRUCTIVE,
    IDEMPOTENT,
    READ,
    WRITE,
    BeadChangeResult,
    BeadId,
    BeadList,
    BeadView,
    Commented,
    changed,
)
from gastown_mcp.town import Town


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(
        description="Create a bead (a unit of work). Polecats: use it to log side work you found.", annotations=WRITE
    )
    async def bead_create(
        title: Annotated[str, Field(max_length=500)],
        description: Annotated[str, Field(max_length=20000)] = "",
        acceptance: Annotated[str, Field(max_length=20000, description="definition of done")] = "",
        type: Literal["task", "bug", "feature", "epic", "chore"] = "task",
        priority: Annotated[int, Field(ge=0, le=4, description="0 highest")] = 2,
        labels: Annotated[list[str], Field(max_length=32)] = [],  # noqa: B006 - pydantic copies defaults
        parent: Annotated[str, Field(max_length=200, description="parent bead id (optional)")] = "",
        blocked_by: Annotated[list[str], Field(max_length=100, description="ids that must finish first")] = [],  # noqa: B006
    ) -> BeadChangeResult:
        return changed(
            await run(
                lambda a: town.bead_create(
                    a,
                    title,
                    description=description,
                    acceptance=acceptance,
                    type=type,
                    priority=priority,
                    labels=labels,
                    parent=parent or None,
                    blocked_by=blocked_by,
                )
            )
        )

    @mcp.tool(description="Show one bead in full: description, acceptance, deps, comments, result.", annotations=READ)
    async def bead_show(id: BeadId) -> BeadView:
        return BeadView.of(await run(lambda a: town.bead_show(a, id)))

    @mcp.tool(description="List beads, filtered by status, assignee or label (slim rows).", annotations=READ)
    async def bead_list(
        status: list[Literal["open", "in_progress", "blocked", "done", "cancelled"]] = [],  # noqa: B006
        assignee: Annotated[str | None, Field(max_length=40)] = None,
        label: Annotated[str | None, Field(max_length=64)] = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
    ) -> BeadList:
        return BeadList.of(
            await run(lambda a: town.bead_list(a, status=status, assignee=assignee, label=label, limit=limit))
        )

    @mcp.tool(description="Beads ready to work now (open, unblocked, unclaimed), best first.", annotations=READ)
    async def bead_ready(limit: Annotated[int, Field(ge=1, le=500)] = 10) -> BeadList:
        return BeadList.of(await run(lambda a: town.bead_ready(a, limit)))

    @mcp.tool(description="Claim a bead before working it; omit id to take the top ready bead.", annotations=WRITE)
    async def bead_claim(
        id: Annotated[str, Field(max_length=200)] = "",  # the description says what empty means
    ) -> BeadChangeResult:
        return changed(await run(lambda a: town.bead_claim_brief(a, id)))

    @mcp.tool(description="Update a bead: notes, fields, or status (blocked needs a reason).", annotations=WRITE)
    async def bead_update(
        id: BeadId,
        status: Literal["open", "blocked", "cancelled"] | None = None,
        reason: Annotated[str, Field(max_length=2000)] = "",
        notes: Annotated[str | None, Field(max_length=20000)] = None,
        title: Annotated[str | None, Field(max_length=500)] = None,
        description: Annotated[str | None, Field(max_length=20000)] = None,
        acceptance: Annotated[str | None, Field(max_length=20000)] = None,
        priority: Annotated[int | None, Field(ge=0, le=4)] = None,
        labels: Annotated[list[str] | None, Field(max_length=32)] = None,
    ) -> BeadChangeResult:
        return changed(
            await run(
                lambda a: town.bead_update(
                    a,
                    id,
                    status=status,
                    reason=reason,
                    notes=notes,
                    title=title,
                    description=description,
                    acceptance=acceptance,
                    priority=priority,
                    labels=labels,
                )
            )
        )

    @mcp.tool(description="Add a comment to a bead.", annotations=WRITE)
    async def bead_comment(id: BeadId, body: Annotated[str, Field(max_length=20000)]) -> Commented:
        cid = await run(lambda a: town.bead_comment(a, id, body))
        return Commented(bead_id=id, comment_id=cid)

    @mcp.tool(description="Mark your claimed bead done, with a summary and the branch/commit.", annotations=WRITE)
    async def bead_complete(
        id: BeadId,
        summary: Annotated[str, Field(max_length=20000)],
        branch: Annotated[str | None, Field(max_length=300)] = None,
        commit: Annotated[str | None, Field(max_length=100)] = None,
    ) -> BeadChangeResult:
        return changed(await run(lambda a: town.bead_complete_brief(a, id, summary, branch, commit)))

    @mcp.tool(description="Give a claimed bead back to the ready queue, saying why.", annotations=DESTRUCTIVE)
    async def bead_release(id: BeadId, reason: Annotated[str, Field(max_length=2000)] = "") -> BeadChangeResult:
        return changed(await run(lambda a: town.bead_release(a, id, reason)))

    @mcp.tool(
        description="Link beads: id depends on other (blocks, parent, related, discovered_from).",
        annotations=IDEMPOTENT,
    )
    async def bead_link(
        id: BeadId,
        other: BeadId,
        kind: Literal["blocks", "parent", "related", "discovered_from"] = "blocks",
    ) -> Dep:
        return await run(lambda a: town.bead_link(a, id, other, kind))
