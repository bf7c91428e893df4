"""The MCP server: thin `bead_*` and `town_*` tools over `Town`, scoped by the caller's role.

`build_server(town, agent=None)` makes a fresh server. With `agent`, every call acts as that agent (stdio: a
local, trusted process). Without it, the caller is the agent whose bearer token came with the HTTP request.
One middleware hides tools a role may not call and delivers pending nudges on the caller's next tool result.

Modules: `build` (build_server + the role middleware), `identity`, `views`, one tool module per noun (`beads`,
`town_tools`, `fleet`, `budgets`, `resources`), `transports` (stdio/HTTP), `client` (helpers for demos/tests).
This file only re-exports; `build_server` lives in `build` so `transports` can use it without an import cycle.
"""

from gastown_mcp.server.build import build_server
from gastown_mcp.server.identity import Identity, TownTokenVerifier
from gastown_mcp.server.resources import role_prompt
from gastown_mcp.server.transports import http_app, run_http, run_stdio
from gastown_mcp.server.views import (
    DESTRUCTIVE,
    IDEMPOTENT,
    READ,
    WRITE,
    AgentList,
    BeadChange,
    BeadId,
    BeadList,
    BeadView,
    Budgets,
    Commented,
    Inbox,
    LimitsIn,
    Row,
    Sent,
    UsageReport,
)

__all__ = [
    "DESTRUCTIVE",
    "IDEMPOTENT",
    "READ",
    "WRITE",
    "AgentList",
    "BeadChange",
    "BeadId",
    "BeadList",
    "BeadView",
    "Budgets",
    "Commented",
    "Identity",
    "Inbox",
    "LimitsIn",
    "Row",
    "Sent",
    "TownTokenVerifier",
    "UsageReport",
    "build_server",
    "http_app",
    "role_prompt",
    "run_http",
    "run_stdio",
]
