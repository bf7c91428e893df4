"""The MCP server: thin `bead_*` and `town_*` tools over `Town`, scoped by the caller's role.

`build_server(town, agent=None)` makes a fresh server. With `agent`, every call acts as that agent (stdio: a
local, trusted process). Without it, the caller is the agent whose bearer token came with the HTTP request.
One middleware hides tools a role may not call and delivers pending nudges on the caller's next tool result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, ListToolsResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from gastown_mcp.errors import GastownError, Unauthorized
from gastown_mcp.models import Agent, Bead, BeadSummary, Dep, Message, Role, TownStatus
from gastown_mcp.town import Heartbeat, Town, roles
from gastown_mcp.town.budgets import AgentUsage, BudgetStatus

T = TypeVar("T")

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
IDEMPOTENT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)

BeadId = Annotated[str, Field(max_length=200, description="bead id, e.g. gt-4f2a")]


class Row(BaseModel):
    """A slim bead row: what list tools return."""

    id: str
    title: str
    status: str
    priority: int
    assignee: str | None = None


class BeadList(BaseModel):
    beads: list[Row]
    hint: str = "bead_show ID for details"

    @classmethod
    def of(cls, beads: list[BeadSummary]) -> BeadList:
        return cls(beads=[Row(**b.model_dump(mode="json")) for b in beads])


class BeadView(BaseModel):
    """A bead as the model reads it: flat strings instead of nested objects, to keep schemas small."""

    id: str
    title: str
    status: str
    priority: int
    type: str
    description: str = ""
    acceptance: str = ""
    notes: str = ""
    labels: list[str] = []
    assignee: str | None = None
    lease_expires_at: str | None = None
    attempts: int = 0
    blocked_by: list[str] = []
    links: list[str] = []
    comments: list[str] = []
    result: dict[str, str | None] | None = None
    created_by: str

    @classmethod
    def of(cls, bead: Bead) -> BeadView:
        return cls(
            **bead.model_dump(
                mode="json",
                include={
                    "id",
                    "title",
                    "status",
                    "priority",
                    "type",
                    "description",
                    "acceptance",
                    "notes",
                    "labels",
                    "assignee",
                    "lease_expires_at",
                    "attempts",
                    "blocked_by",
                    "result",
                    "created_by",
                },
            ),
            links=[f"{d.bead_id} {d.kind.value} {d.depends_on}" for d in bead.deps],
            comments=[f"{c.author}: {c.body}" for c in bead.comments],
        )


class BeadChange(BaseModel):
    """What a write did: the bead's new state in brief (bead_show for the rest)."""

    id: str
    title: str
    status: str
    assignee: str | None = None
    lease_expires_at: str | None = None
    attempts: int = 0

    @classmethod
    def of(cls, bead: Bead) -> BeadChange:
        return cls(
            **bead.model_dump(
                mode="json", include={"id", "title", "status", "assignee", "lease_expires_at", "attempts"}
            )
        )


class AgentList(BaseModel):
    agents: list[Agent]


class Inbox(BaseModel):
    messages: list[Message]


class Sent(BaseModel):
    message_id: int
    to: str
    state: str


class Commented(BaseModel):
    bead_id: str
    comment_id: int


class TownTokenVerifier:
    """Maps a bearer token to the agent it belongs to; unknown or revoked tokens get 401."""

    def __init__(self, town: Town) -> None:
        self.town = town

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            agent = await anyio.to_thread.run_sync(self.town.authenticate, token)
        except Unauthorized:
            return None
        return AccessToken(token=token, client_id=agent.name, scopes=[agent.role.value])


def _as_dict(result: HandlerResult) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dict(result or {})


def _only_tools(result: HandlerResult, allowed: set[str]) -> dict[str, Any]:
    data = _as_dict(result)
    data["tools"] = [t for t in data.get("tools", []) if t.get("name") in allowed]
    return data


def _with_nudges(result: HandlerResult, lines: list[str], open_schema: bool) -> dict[str, Any]:
    """Put the nudges where every client's model reads them: a text block, and - since Claude Code gives
    the model only the structured content when there is one - a `nudges` key in it when the tool's output
    schema allows extra keys (every polecat tool's does)."""
    data = _as_dict(result)
    data["content"] = [*data.get("content", []), {"type": "text", "text": "\n".join(lines)}]
    structured = data.get("structuredContent")
    if open_schema and isinstance(structured, dict):
        data["structuredContent"] = {**structured, "nudges": lines}
    return data


def role_prompt(role: Role) -> str:
    return resources.files("gastown_mcp").joinpath("prompts", f"{role.value}.md").read_text()


class _Identity:
    def __init__(self, town: Town, fixed: Agent | None) -> None:
        self.town = town
        self.fixed = fixed

    def current(self) -> Agent:
        if self.fixed is not None:
            return self.town.agent(self.fixed.name)  # re-read: a removed agent stops working at once
        token = get_access_token()
        if token is None:
            raise Unauthorized("no agent identity on this connection: send `Authorization: Bearer <token>`")
        return self.town.agent(token.client_id)


def build_server(town: Town, agent: Agent | None = None, *, http_url: str | None = None) -> MCPServer:
    """A fresh MCP server over `town`: stdio/in-process as `agent`, or HTTP with bearer tokens (`http_url`)."""
    identity = _Identity(town, agent)
    auth_kwargs: dict[str, Any] = {}
    if agent is None:
        base = (http_url or "http://127.0.0.1").rstrip("/")
        auth_kwargs = {
            "token_verifier": TownTokenVerifier(town),
            "auth": AuthSettings(
                issuer_url=base,  # type: ignore[arg-type]
                resource_server_url=f"{base}/mcp",  # type: ignore[arg-type]
                validate_token_resource=False,  # the verifier maps tokens to agents itself
            ),
        }

    open_outputs: set[str] = set()  # tools whose output schema admits an extra `nudges` key

    async def scope_by_role(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in ("tools/list", "tools/call"):
            return await call_next(ctx)
        try:
            caller = await anyio.to_thread.run_sync(identity.current)
        except GastownError as exc:
            if ctx.method == "tools/list":
                return ListToolsResult(tools=[])
            return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        allowed = set(roles.tools_for(caller.role))
        if ctx.method == "tools/list":
            return _only_tools(await call_next(ctx), allowed)
        name = (ctx.params or {}).get("name")
        if name not in allowed:
            return CallToolResult(
                content=[TextContent(type="text", text=f"{caller.name} ({caller.role.value}) may not call {name}")],
                is_error=True,
            )
        result = await call_next(ctx)
        nudges = await anyio.to_thread.run_sync(town.take_nudges, caller)
        if nudges:
            if not open_outputs:
                open_outputs.update(
                    t.name
                    for t in await mcp.list_tools()
                    if (t.output_schema or {}).get("additionalProperties", True) is not False
                )
            lines = [n.nudge_line() for n in nudges]
            result = _with_nudges(result, lines, name in open_outputs)
        return result

    mcp = MCPServer(
        "gastown",
        instructions=(
            "Gas Town bead tracker. Beads are units of work: claim one before working it, complete it with a "
            "summary, log side work as new beads. Nudges from the mayor or witness arrive in tool results."
        ),
        middleware=[scope_by_role],
        log_level="WARNING",
        **auth_kwargs,
    )

    async def run(fn: Callable[[Agent], T]) -> T:
        def call() -> T:
            return fn(identity.current())

        try:
            return await anyio.to_thread.run_sync(call)
        except GastownError as exc:
            raise ToolError(str(exc)) from exc

    _register_bead_tools(mcp, town, run)
    _register_town_tools(mcp, town, run)
    _register_fleet_tools(mcp, town, run)
    _register_budget_tools(mcp, town, run)
    _register_resources_and_prompts(mcp, town, run)
    return mcp


def _register_bead_tools(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
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
    ) -> BeadChange:
        return BeadChange.of(
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

    @mcp.tool(description="List beads, filtered by status, assignee, label or type (slim rows).", annotations=READ)
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
        id: Annotated[str, Field(max_length=200, description="bead id; empty takes the top ready bead")] = "",
    ) -> BeadView:
        return BeadView.of(await run(lambda a: town.bead_claim(a, id)))

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
    ) -> BeadChange:
        return BeadChange.of(
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
    ) -> BeadChange:
        return BeadChange.of(await run(lambda a: town.bead_complete(a, id, summary, branch, commit)))

    @mcp.tool(description="Give a claimed bead back to the ready queue, saying why.", annotations=DESTRUCTIVE)
    async def bead_release(id: BeadId, reason: Annotated[str, Field(max_length=2000)] = "") -> BeadChange:
        return BeadChange.of(await run(lambda a: town.bead_release(a, id, reason)))

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


def _register_town_tools(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(description="Town overview: beads by status, ready count, agents by role.", annotations=READ)
    async def town_status() -> TownStatus:
        return await run(lambda a: town.status(a))

    @mcp.tool(description="List agents with role, rig and state.", annotations=READ)
    async def town_agents(
        role: Literal["overseer", "mayor", "refinery", "deacon", "witness", "polecat", "dog"] | None = None,
    ) -> AgentList:
        return AgentList(agents=await run(lambda a: town.agents(a, role)))

    @mcp.tool(description="Nudge an agent: the text reaches it with its next tool result.", annotations=WRITE)
    async def town_nudge(
        to: Annotated[str, Field(max_length=40)], text: Annotated[str, Field(max_length=4000)]
    ) -> Sent:
        m = await run(lambda a: town.nudge(a, to, text))
        return Sent(message_id=m.id, to=m.recipient, state=m.state.value)

    @mcp.tool(description="Read your mail and nudges; pass ack ids to acknowledge them.", annotations=IDEMPOTENT)
    async def town_inbox(
        ack: Annotated[list[int], Field(max_length=100)] = [],  # noqa: B006
        unread_only: bool = True,
    ) -> Inbox:
        def go(a: Agent) -> list[Message]:
            if ack:
                town.acknowledge(a, ack)
            return town.inbox(a, unread_only=unread_only)

        return Inbox(messages=await run(go))

    @mcp.tool(description="Send mail to another agent (e.g. the mayor).", annotations=WRITE)
    async def town_mail_send(
        to: Annotated[str, Field(max_length=40)],
        subject: Annotated[str, Field(max_length=200)],
        body: Annotated[str, Field(max_length=20000)],
        thread: Annotated[str | None, Field(max_length=100)] = None,
    ) -> Sent:
        m = await run(lambda a: town.mail_send(a, to, subject, body, thread))
        return Sent(message_id=m.id, to=m.recipient, state=m.state.value)

    @mcp.tool(description="Say you are alive: renews your bead leases; shows what you hold.", annotations=IDEMPOTENT)
    async def town_heartbeat() -> Heartbeat:
        return await run(lambda a: town.heartbeat(a))


class LimitsIn(BaseModel):
    """Resource ceilings for a spawned container; omitted fields take the role's defaults."""

    memory_mb: int | None = Field(default=None, ge=64, le=65536)
    cpus: float | None = Field(default=None, gt=0, le=64)
    pids: int | None = Field(default=None, ge=16, le=65536)
    wallclock_s: int | None = Field(default=None, ge=10, le=7 * 86400)


def _register_fleet_tools(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
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


class Budgets(BaseModel):
    budgets: list[BudgetStatus]


class UsageReport(BaseModel):
    agents: list[AgentUsage]


def _register_budget_tools(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
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


def _register_resources_and_prompts(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
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


# -- transports ------------------------------------------------------------------------------------
def run_stdio(town: Town, agent: Agent) -> None:
    """Serve MCP over stdin/stdout as `agent` (a local, trusted process)."""
    build_server(town, agent).run("stdio")


def http_app(town: Town, host: str, port: int, allowed_hosts: list[str] | None = None) -> Any:
    """The Starlette app serving streamable HTTP at /mcp, bearer token per request."""
    url = f"http://{host}:{port}"
    server = build_server(town, http_url=url)
    hosts = [f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", *(allowed_hosts or [])]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts)
    return server.streamable_http_app(transport_security=security, host=host)


def run_http(town: Town, host: str, port: int) -> None:
    """Serve MCP over streamable HTTP at http://host:port/mcp until interrupted."""
    from gastown_mcp import serving

    serving.run(http_app(town, host, port, town.settings.server.allowed_hosts), host, port)
