"""The one domain API: every surface (MCP server, CLI, gateway, supervisors, demos) calls `Town`.

`Town` wires the nouns, one module each: beads, agents, mail, fleet, merges (rigs and the hand-in),
plans (convoys and acceptance checks), goals (goals and the overseer's directives), the mayor, budgets and
routes, dogs, feed, the operator's overview (board, needs-you, spend), and workspaces (repositories over git
smart HTTP). Each method takes the acting `Agent` first, checks it in the guard (permissions and input, beside
the roles table), and calls the store or the fleet, which nothing outside this package holds. Any call by an
agent renews its leases. `glance` is the narrow read-only door for the quickest CLI reads (no pydantic).

The names below load when first used (`from gastown_mcp.town import Town`), not when the package is imported,
so `gastown_mcp.town.glance` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gastown_mcp.store import Credentials
    from gastown_mcp.town.agents import Heartbeat
    from gastown_mcp.town.base import OPERATOR, Caller, NeedsThread, WriteLockTaken, operator, system_agent
    from gastown_mcp.town.core import Town
    from gastown_mcp.town.fleet import Fleet, FleetConfig, role_limits

__all__ = [
    "OPERATOR",
    "Caller",
    "Credentials",
    "Fleet",
    "FleetConfig",
    "Heartbeat",
    "NeedsThread",
    "Town",
    "WriteLockTaken",
    "operator",
    "role_limits",
    "system_agent",
]

_HOMES = {
    "OPERATOR": "gastown_mcp.town.base",
    "Caller": "gastown_mcp.town.base",
    "operator": "gastown_mcp.town.base",
    "system_agent": "gastown_mcp.town.base",
    "NeedsThread": "gastown_mcp.town.base",
    "WriteLockTaken": "gastown_mcp.town.base",
    "Credentials": "gastown_mcp.store",
    "Heartbeat": "gastown_mcp.town.agents",
    "Town": "gastown_mcp.town.core",
    "Fleet": "gastown_mcp.town.fleet",
    "FleetConfig": "gastown_mcp.town.fleet",
    "role_limits": "gastown_mcp.town.fleet",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
