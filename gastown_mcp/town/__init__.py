"""The one domain API: every surface (MCP server, CLI, gateway, supervisors, demos) calls `Town`.

`Town` wires the nouns, one module each: beads, agents, mail, fleet, merges (rigs and the hand-in),
plans (convoys and acceptance checks), goals (goals and the overseer's directives), the mayor, budgets and
routes, dogs, feed, the operator's overview (board, needs-you, spend), and workspaces (repositories over git
smart HTTP). Each method takes the acting `Agent` first, checks it in the guard (permissions and input, beside
the roles table), and calls the store or the fleet, which nothing outside this package holds. Any call by an
agent renews its leases.
"""

from __future__ import annotations

from gastown_mcp.config import Settings
from gastown_mcp.store import Credentials, Store
from gastown_mcp.town.agents import Heartbeat
from gastown_mcp.town.base import OPERATOR, Caller, NeedsThread, WriteLockTaken, operator, system_agent
from gastown_mcp.town.beads import BeadsAPI
from gastown_mcp.town.budgets import BudgetsAPI
from gastown_mcp.town.dogs import DogsAPI
from gastown_mcp.town.feed import FeedAPI
from gastown_mcp.town.fleet import Fleet, FleetConfig, role_limits
from gastown_mcp.town.goals import GoalsAPI
from gastown_mcp.town.mayor import MayorAPI
from gastown_mcp.town.overview import OverviewAPI
from gastown_mcp.town.plans import PlansAPI
from gastown_mcp.town.routes import RoutesAPI
from gastown_mcp.town.workspaces import WorkspacesAPI

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


class Town(OverviewAPI, GoalsAPI, MayorAPI, BeadsAPI, PlansAPI, BudgetsAPI, RoutesAPI, DogsAPI, FeedAPI, WorkspacesAPI):
    """A town over its store, optionally with a fleet (a container runtime and where agents find the town)."""

    def __init__(self, store: Store, settings: Settings, fleet: Fleet | None = None) -> None:
        super().__init__(store, settings)
        self._fleet = fleet
        self._init_budgets()
