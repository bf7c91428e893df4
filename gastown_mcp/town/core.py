"""`Town`: the one domain API, wired from its nouns (see the package docstring for what each one holds)."""

from __future__ import annotations

from gastown_mcp.config import Settings
from gastown_mcp.store import Store
from gastown_mcp.town.beads import BeadsAPI
from gastown_mcp.town.budgets import BudgetsAPI
from gastown_mcp.town.dogs import DogsAPI
from gastown_mcp.town.feed import FeedAPI
from gastown_mcp.town.fleet import Fleet
from gastown_mcp.town.goals import GoalsAPI
from gastown_mcp.town.mayor import MayorAPI
from gastown_mcp.town.overview import OverviewAPI
from gastown_mcp.town.plans import PlansAPI
from gastown_mcp.town.routes import RoutesAPI
from gastown_mcp.town.workspaces import WorkspacesAPI

__all__ = ["Town"]


class Town(OverviewAPI, GoalsAPI, MayorAPI, BeadsAPI, PlansAPI, BudgetsAPI, RoutesAPI, DogsAPI, FeedAPI, WorkspacesAPI):
    """A town over its store, optionally with a fleet (a container runtime and where agents find the town)."""

    def __init__(self, store: Store, settings: Settings, fleet: Fleet | None = None) -> None:
        super().__init__(store, settings)
        self._fleet = fleet
        self._init_budgets()
