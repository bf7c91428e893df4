"""The town's SQLite store: the only package that holds SQL.

`Store(settings)` opens (and migrates) the town database and exposes one repository per noun.
"""

from __future__ import annotations

from gastown_mcp.config import Settings
from gastown_mcp.store.agents import AgentRepo, Credentials
from gastown_mcp.store.beads import BeadRepo
from gastown_mcp.store.db import Database
from gastown_mcp.store.events import EventRepo
from gastown_mcp.store.launches import LaunchRepo
from gastown_mcp.store.merges import MergeRepo
from gastown_mcp.store.messages import MessageRepo

__all__ = ["Credentials", "Store"]


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.db_path, settings.journal_path)
        self.beads = BeadRepo(self.db, settings.town.prefix)
        self.agents = AgentRepo(self.db)
        self.messages = MessageRepo(self.db)
        self.events = EventRepo(self.db)
        self.merges = MergeRepo(self.db, self.beads)
        self.launches = LaunchRepo(self.db, self.beads, self.agents)

    def close(self) -> None:
        self.db.close()
