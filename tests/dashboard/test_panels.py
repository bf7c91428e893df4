"""Panels drawn from the store are redrawn only when the town's data changed: an open dashboard on an idle town
reads next to nothing, and any write (a bead, a usage row, an agent's heartbeat) shows on the next refresh."""

from __future__ import annotations

from typing import Any

from gastown_mcp.config import DashboardSection, Settings
from gastown_mcp.dashboard.app import Dashboard
from gastown_mcp.errors import StoreError
from gastown_mcp.models import Agent
from gastown_mcp.store import Store
from gastown_mcp.town import Town, operator


class CountingTown(Town):
    """Counts the board's reads; fails every checked call while `broken` is set."""

    boards = 0
    broken = False

    def board(self, *args: Any, **kwargs: Any) -> Any:
        self.boards += 1
        return super().board(*args, **kwargs)

    def _require(self, actor: Agent, action: str, what: str) -> None:
        if self.broken:
            raise StoreError("database read failed: disk I/O error (forced by the test)")
        super()._require(actor, action, what)


def test_a_store_panel_is_redrawn_only_after_a_write_and_a_failed_read_still_shows_stale(
    store: Store, settings: Settings
) -> None:
    town = CountingTown(store, settings)
    op = operator()
    panels = Dashboard(town, DashboardSection()).panels
    town.bead_create(op, "first")
    one = panels.render("board", {}, "csrf-a")
    assert "first" in one and town.boards == 1
    assert panels.render("board", {}, "csrf-a") == one and town.boards == 1  # nothing changed: not redrawn
    assert panels.render("board", {"page": "1"}, "csrf-a") and town.boards == 2  # another query is its own

    town.bead_create(op, "second")
    two = panels.render("board", {}, "csrf-a")
    assert "second" in two and town.boards == 3

    town.agent_add(op, "nux", "polecat")  # any write, not only beads
    panels.render("board", {}, "csrf-a")
    assert town.boards == 4

    town.broken = True  # the check that decides whether to redraw is a read like any other
    stale = panels.render("board", {}, "csrf-a")
    assert "stale-banner" in stale and "disk I/O error" in stale and "second" in stale
