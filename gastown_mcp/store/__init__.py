"""The town's SQLite store: the only package that holds SQL.

`Store(settings)` opens (and migrates) the town database and exposes one repository per noun. The repositories
load when a `Store` is built, not when this package is imported: a read that needs only `db` and the
standard-library modules here (`glance`, `counts`, `migrations`, `journal`) loads no pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gastown_mcp.config import Settings
    from gastown_mcp.store.agents import Credentials

__all__ = ["Credentials", "Store"]


def __getattr__(name: str) -> Any:
    if name == "Credentials":
        from gastown_mcp.store.agents import Credentials

        return Credentials
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Store:
    def __init__(self, settings: Settings, *, must_exist: bool = False, check: bool = False) -> None:
        """`must_exist`: refuse a missing or empty database (an existing town); `check`: quick check first."""
        from gastown_mcp.store.agents import AgentRepo
        from gastown_mcp.store.beads import BeadRepo
        from gastown_mcp.store.db import Database
        from gastown_mcp.store.events import EventRepo
        from gastown_mcp.store.goals import GoalRepo
        from gastown_mcp.store.growth import GrowthRepo
        from gastown_mcp.store.health import HealthRepo
        from gastown_mcp.store.launches import LaunchRepo
        from gastown_mcp.store.merges import MergeRepo
        from gastown_mcp.store.messages import MessageRepo
        from gastown_mcp.store.plans import PlanRepo, land_convoys

        self.settings = settings
        self.db = Database(
            settings.db_path, settings.journal_path, fsync=settings.dogs.durable, must_exist=must_exist, check=check
        )
        self.beads = BeadRepo(self.db, settings.town.prefix)
        self.agents = AgentRepo(self.db)
        self.messages = MessageRepo(self.db)
        self.events = EventRepo(self.db)
        self.health = HealthRepo(self.db)
        self.growth = GrowthRepo(self.db)
        self.merges = MergeRepo(self.db, self.beads)
        self.plans = PlanRepo(self.db, self.beads)
        self.beads.on_cancelled.append(lambda tx, actor, ids: land_convoys(tx, self.beads, actor, ids))
        self.launches = LaunchRepo(self.db, self.beads, self.agents)
        self.goals = GoalRepo(self.db)

    def close(self) -> None:
        self.db.close()
