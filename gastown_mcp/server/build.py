"""`build_server`: a fresh MCP server over `Town`, and the one middleware that scopes it by the caller's role.

The middleware hides tools a role may not call, refuses calls to them, and delivers pending nudges on the
caller's next tool result; prompts and resources are listed and read by role the same way. `run` is the one
place where domain errors become tool errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, INVALID_REQUEST, CallToolResult, ListToolsResult, TextContent
from pydantic import BaseModel

from gastown_mcp.errors import GastownError
from gastown_mcp.models import Agent
from gastown_mcp.server import beads, budgets, fleet, goals, merges, plans, resources, town_tools, views
from gastown_mcp.server.calls import QUICK_TOOLS, Bodies, ToolThreads
from gastown_mcp.server.identity import Identity, TownTokenVerifier
from gastown_mcp.town import Town, roles

T = TypeVar("T")


def _as_dict(result: HandlerResult) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dict(result or {})


def _only_tools(result: HandlerResult, allowed: frozenset[str]) -> dict[str, Any]:
    data = _as_dict(result)
    data["tools"] = views.slim_tools([t for t in data.get("tools", []) if t.get("name") in allowed])
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


_READS = {  # method -> the result key it lists (or None), prompts and resources scoped by role as tools are
    "prompts/list": "prompts",
    "prompts/get": None,
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "resources/read": None,
}


def _resource_key(uri: str, allowed: set[str]) -> str | None:
    """The allowed entry (a prompt name, resource URI or URI template) that `uri` is or falls under, if any."""
    for entry in allowed:
        if uri == entry or ("{" in entry and "{" not in uri and uri.startswith(entry.split("{", 1)[0])):
            return entry
    return None


async def _scope_reads(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext, identity: Identity, mcp: MCPServer
) -> HandlerResult:
    """A role lists and reads only its own prompt (the overseer every one) and the resources it may read; a
    name or URI the server does not have at all is reported as unknown, not as forbidden."""
    key = _READS[ctx.method]
    try:
        caller = identity.resolve().agent
    except GastownError as exc:
        if key is not None:
            return {key: []}
        raise MCPError(code=INVALID_REQUEST, message=str(exc)) from exc
    prompts = set(roles.prompts_for(caller.role))
    resources = set(roles.resources_for(caller.role))
    who = f"{caller.name} ({caller.role.value})"
    params = ctx.params or {}
    if ctx.method == "prompts/get" and params.get("name") not in prompts:
        name = params.get("name")
        if name not in {p.name for p in await mcp.list_prompts()}:
            raise MCPError(code=INVALID_PARAMS, message=f"unknown prompt {name!r}; prompts/list shows {who}'s")
        raise MCPError(code=INVALID_PARAMS, message=f"{who} may not read the {name} prompt; read {caller.role.value}")
    if ctx.method == "resources/read" and _resource_key(str(params.get("uri")), resources) is None:
        uri = str(params.get("uri"))
        every = {str(r.uri) for r in await mcp.list_resources()}
        every |= {t.uri_template for t in await mcp.list_resource_templates()}
        if _resource_key(uri, every) is None:
            raise MCPError(
                code=INVALID_PARAMS, message=f"unknown resource {uri}; resources/list shows {who}'s", data={"uri": uri}
            )
        raise MCPError(code=INVALID_PARAMS, message=f"{who} may not read {uri}")
    if key is None:
        return await call_next(ctx)
    data = _as_dict(await call_next(ctx))
    field = "name" if key == "prompts" else "uriTemplate" if key == "resourceTemplates" else "uri"
    allowed = prompts if key == "prompts" else resources
    data[key] = [item for item in data.get(key, []) if _resource_key(str(item.get(field)), allowed)]
    return data


def build_server(
    town: Town,
    agent: Agent | None = None,
    *,
    verifier: TownTokenVerifier | None = None,
    bodies: Bodies | None = None,
) -> MCPServer:
    """A fresh MCP server over `town`: stdio/in-process as `agent`, or for HTTP with bearer tokens (served
    behind `gate.AgentGate`, which checks them: see `transports.http_app`)."""
    if agent is None:
        # The HTTP gate (`gate.AgentGate`) authenticates every request and gives the SDK the caller it would
        # have found itself (`scope["user"]`, the access-token context), so the SDK's own auth layers stay off.
        verifier = verifier or TownTokenVerifier(town)
    identity = Identity(town, agent, verifier)

    bodies = bodies or Bodies(town, ToolThreads())
    threads = bodies.threads
    quick_call: ContextVar[bool] = ContextVar("gastown_quick_call", default=False)  # this call's tool is quick
    open_outputs: set[str] = set()  # tools whose output schema admits an extra `nudges` key
    known_tools: set[str] = set()  # every registered tool, to tell an unknown name from a forbidden one

    async def scope_by_role(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method in _READS:
            return await _scope_reads(ctx, call_next, identity, mcp)
        if ctx.method not in ("tools/list", "tools/call"):
            return await call_next(ctx)
        try:
            # One indexed read on the event loop (identity epoch and pending nudge), no thread hand-off.
            resolved = identity.resolve()
        except GastownError as exc:
            if ctx.method == "tools/list":
                return ListToolsResult(tools=[])
            return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        caller = resolved.agent
        allowed = roles.tool_set(caller.role)
        if ctx.method == "tools/list":
            return _only_tools(await call_next(ctx), allowed)
        name = (ctx.params or {}).get("name")
        if name not in allowed:
            if not known_tools:
                known_tools.update(t.name for t in await mcp.list_tools())
            who = f"{caller.name} ({caller.role.value})"
            text = (
                f"{who} may not call {name}"
                if name in known_tools
                else f"unknown tool {name!r}: there is no such tool; tools/list shows the ones {who} may call"
            )
            return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
        with identity.serving(resolved):
            started = time.time_ns()
            reset = quick_call.set(name in QUICK_TOOLS)
            try:
                result = await call_next(ctx)
            finally:
                quick_call.reset(reset)
        if town.traces is not None:  # `[otel] endpoint` set: the call's span on its bead's trace
            failed = _as_dict(result).get("isError") or None
            await threads.run(town.traces.tool_call, caller, str(name), started, failed and "tool error")
        if not resolved.nudged:
            return result
        nudges = await threads.run(town.take_nudges, caller)
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
    )

    async def run(fn: Callable[[Agent], T]) -> T:
        """`fn(caller)`: on the event loop for the `QUICK_TOOLS`, else on a worker thread (see `calls`)."""
        try:
            caller = identity.current()  # resolved for this request already: no look-up
            return await bodies.run(fn, caller, quick=quick_call.get())
        except GastownError as exc:
            raise ToolError(str(exc)) from exc

    # Registration order is the order tools/list shows them; keep it stable (schemas are diffed by it).
    beads.register(mcp, town, run)
    town_tools.register(mcp, town, run)
    fleet.register(mcp, town, run)
    budgets.register(mcp, town, run)
    merges.register(mcp, town, run)
    plans.register(mcp, town, run)
    goals.register(mcp, town, run)
    resources.register(mcp, town, run)
    return mcp
