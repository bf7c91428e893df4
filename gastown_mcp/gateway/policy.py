"""What a request may ask of the provider: a body the gateway can bound before it reserves, and nothing that
makes the provider act or fetch on the agent's behalf (server tools, MCP servers, beta features) unless
`[gateway]` allows it for the agent's role. Every refusal is a 400 naming the field and the setting.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gastown_mcp.config import GatewayConfig
from gastown_mcp.gateway.wire import Refusal


@dataclass(frozen=True)
class Checked:
    """What the gateway needs from an accepted body."""

    model: str
    max_tokens: int  # 0 for count_tokens, which generates nothing
    stream: bool


def check(
    body: bytes, headers: Iterable[tuple[bytes, bytes]], role: str, config: GatewayConfig, *, metered: bool
) -> Checked:
    """Parse and vet a Messages API request body and its beta header for an agent of `role`, or raise."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _bad("request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad(f"`model` must be a non-empty string (got {_show(model)})")
    if not isinstance(data.get("messages"), list):
        raise _bad(f"`messages` must be a list (got {_show(data.get('messages'))})")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad(f"`stream` must be true or false (got {_show(stream)})")
    max_tokens = _max_tokens(data, role, config) if metered else 0
    _tools(data.get("tools"), role, config)
    _mcp_servers(data.get("mcp_servers"), role, config)
    _betas(headers, role, config)
    return Checked(model, max_tokens, stream)


def _max_tokens(data: dict[str, Any], role: str, config: GatewayConfig) -> int:
    value = data.get("max_tokens")
    # bool is an int in Python but not in JSON; a float or string would reserve nothing for the output.
    if type(value) is not int or value <= 0:
        raise _bad(f"`max_tokens` must be a positive integer (got {_show(value)}); the gateway reserves budget by it")
    cap, setting = config.max_tokens_cap(role)
    if value > cap:
        raise _bad(
            f"`max_tokens` {_show(value)} is over this town's cap of {cap} for a {role} ([gateway] {setting}); "
            f"ask for at most {cap}, or raise [gateway] {setting} in town.toml"
        )
    return value


def _tools(tools: Any, role: str, config: GatewayConfig) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _bad(f"`tools` must be a list (got {_show(tools)})")
    allowed = config.allowed(config.allowed_server_tools, role)
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"`tools[{i}]` must be an object")
        kind = tool.get("type")
        if kind is None or kind == "custom":  # a tool the agent runs itself: nothing happens at the provider
            continue
        if not isinstance(kind, str) or not _matches(kind, allowed):
            raise _bad(
                f"`tools[{i}]` has type {_show(kind)}, a tool the provider runs or defines (web search/fetch, code "
                f"execution, computer use, …), which a {role} may not use; allow it with [gateway] "
                f"allowed_server_tools = {{{role} = [{json.dumps(str(kind))}]}} in town.toml"
            )


def _mcp_servers(servers: Any, role: str, config: GatewayConfig) -> None:
    if servers is None:
        return
    if not isinstance(servers, list):
        raise _bad(f"`mcp_servers` must be a list (got {_show(servers)})")
    allowed = config.allowed(config.allowed_mcp_servers, role)
    for i, server in enumerate(servers):
        url = server.get("url") if isinstance(server, dict) else None
        if not isinstance(url, str) or not _matches(url, allowed):
            raise _bad(
                f"`mcp_servers[{i}]` asks the provider to connect to {_show(url)}, which a {role} may not use; "
                f"allow it with [gateway] allowed_mcp_servers = {{{role} = [{json.dumps(str(url))}]}} in town.toml"
            )


def _betas(headers: Iterable[tuple[bytes, bytes]], role: str, config: GatewayConfig) -> None:
    allowed = config.allowed(config.allowed_betas, role)
    for name, value in headers:
        if name.lower() != b"anthropic-beta":
            continue
        for beta in value.decode("latin-1").split(","):
            beta = beta.strip()
            if beta and not _matches(beta, allowed):
                raise _bad(
                    f"anthropic-beta {beta!r} is not allowed for a {role}; allow it with [gateway] "
                    f"allowed_betas = {{{role} = [{json.dumps(beta)}]}} in town.toml"
                )


def _matches(value: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, g) for g in globs)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(message: str) -> Refusal:
    return Refusal(400, "invalid_request_error", message)
