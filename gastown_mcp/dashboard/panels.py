"""The dashboard's panels: what each one reads from the town (as the operator) and which template draws it.

A panel is rendered the same way inside a page and alone as a fragment (what the page's script refreshes).
When its data cannot be read, the last good rendering is shown marked stale, with the time it is from and the
reason; a panel that never rendered says it is unavailable. Never a blank panel, never a traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from gastown_mcp.dashboard.chart import spend_chart
from gastown_mcp.errors import GastownError, InvalidInput
from gastown_mcp.models import Agent
from gastown_mcp.town import Town
from gastown_mcp.town.overview import BOARD_COLUMNS, BoardFilter

log = logging.getLogger(__name__)

Query = Mapping[str, str]
PAGE = 50  # beads per page of one board column
PREVIEW = 8  # beads per column on the overview


@dataclass(frozen=True)
class Panel:
    name: str
    template: str
    load: Callable[[Town, Agent, Query], dict[str, Any]]
    title: str


def board_filter(q: Query) -> BoardFilter:
    def text(key: str) -> str | None:
        value = (q.get(key) or "").strip()
        return value[:200] or None

    priority = text("priority")
    if priority is not None and not priority.isdigit():
        raise InvalidInput(f"priority filter {priority!r} is not a number from 0 to 4")
    return BoardFilter(
        rig=text("rig"),
        label=text("label"),
        assignee=text("assignee"),
        type=text("type"),
        priority=int(priority) if priority is not None else None,
        text=text("q"),
    )


def _page(q: Query) -> int:
    raw = q.get("page") or "1"
    return max(1, int(raw)) if raw.isdigit() else 1


def load_board(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    where = board_filter(q)
    column = q.get("column") or ""
    if column:
        page = _page(q)
        board = town.board(op, where, columns=(column,), limit=PAGE, offset=(page - 1) * PAGE)
        pages = max(1, -(-board.columns[0].count // PAGE))
        return {"board": board, "column": column, "page": page, "pages": pages, "filters": where, "query": q}
    board = town.board(op, where, limit=int(q.get("per") or PREVIEW) if (q.get("per") or "").isdigit() else PREVIEW)
    return {"board": board, "column": None, "page": 1, "pages": 1, "filters": where, "query": q}


def load_needs(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    return {"items": town.needs_you(op)}


def load_agents(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    return {"rows": town.agent_rows(op, include_exited=q.get("all") == "1"), "all": q.get("all") == "1"}


def load_agent(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    name = q.get("name") or ""
    row = next((r for r in town.agent_rows(op) if r.agent.name == name), None)
    if row is None:
        town.agent(name)  # the NotFound with its message
    logs, note = "", ""
    if town.has_fleet:
        try:
            logs = town.logs(op, name, 100)
        except GastownError as exc:
            note = str(exc)
    else:
        note = "no container runtime attached here: logs are read by the running town (`gastown up`)"
    # The agent's latest events: those among the town's last 20,000 (an index range on agent, id).
    events = town.events(op, agent=name, after_id=max(0, town.last_event_id(op) - 20_000), limit=500)
    return {"row": row, "logs": logs, "logs_note": note, "events": list(reversed(events[-50:]))}


def load_merges(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    open_ = town.merge_list(op, state=["queued", "testing"], limit=100)
    ended = town.merge_list(op, state=["merged", "failed", "conflicted", "rejected"], limit=30)
    return {"open": open_, "ended": ended}


def load_convoys(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    convoys = town.convoy_list(op, limit=50)
    spend = {u.key: u for u in town.usage_by(op, "convoy", limit=500)}
    return {"convoys": convoys, "spend": spend}


def load_spend(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    budgets = town.budget(op)
    town_usd = next((b.usd_limit for b in budgets if b.scope.value == "town"), None)
    return {
        "budgets": budgets,
        "chart": spend_chart(town.spend_series(op), town_usd),
        "by": {k: town.usage_by(op, k, limit=10) for k in ("agent", "role", "rig", "bead", "convoy")},
    }


def load_feed(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    events = town.recent_events(op, 50)
    return {"events": list(reversed(events)), "last_id": events[-1].id if events else 0}


def load_bead(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    return {"story": town.bead_story(op, q.get("id") or "")}


def load_status(town: Town, op: Agent, q: Query) -> dict[str, Any]:
    counts = town.board(op, columns=()).counts  # from indexes alone: cheap at any size
    return {"counts": counts, "alive": len(town.alive_agents(op)), "estop": town.frozen()}


PANELS: dict[str, Panel] = {
    p.name: p
    for p in (
        Panel("needs", "panel_needs.html", load_needs, "Needs you"),
        Panel("board", "panel_board.html", load_board, "Beads"),
        Panel("agents", "panel_agents.html", load_agents, "Agents"),
        Panel("agent", "panel_agent.html", load_agent, "Agent"),
        Panel("merges", "panel_merges.html", load_merges, "Merge queue"),
        Panel("convoys", "panel_convoys.html", load_convoys, "Convoys"),
        Panel("spend", "panel_spend.html", load_spend, "Spend"),
        Panel("feed", "panel_feed.html", load_feed, "Live feed"),
        Panel("bead", "panel_bead.html", load_bead, "Bead"),
        Panel("status", "panel_status.html", load_status, "Town"),
    )
}


# Panels drawn from the store alone: redrawn only when the town's data changed (or after REDRAW_S), so an
# open dashboard on an idle town costs next to nothing. The others also show what the runtime or git says.
FROM_STORE = frozenset({"needs", "board", "merges", "convoys", "spend", "feed", "status"})
# Panels the page re-reads every `refresh_seconds` (their data changes without a town event: a log tail); the
# others are redrawn when the live feed says the town changed.
POLLED = frozenset({"agent"})
REDRAW_S = 60.0
DRAWN_KEPT = 256


class PanelRenderer:
    """Renders panels and remembers each one's last good HTML (per panel and query) for the stale view."""

    def __init__(self, env: Environment, town: Town, op: Agent) -> None:
        self.env = env
        self.town = town
        self.op = op
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Markup, float]] = {}
        # (panel, query, csrf) -> (the town's change stamp, when drawn, the HTML), oldest first
        self._drawn: OrderedDict[tuple[Any, ...], tuple[tuple[int, ...], float, Markup]] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, name: str, q: Query, csrf: str) -> Markup:
        """Runs in a worker thread: reads the town and draws the panel (or its stale or unavailable form)."""
        panel = PANELS[name]
        key = (name, tuple(sorted(q.items())))
        drawn_key = (name, key[1], csrf)
        try:
            stamp = self.town.change_stamp(self.op) if name in FROM_STORE else None  # a read like any other
            if stamp is not None:
                with self._lock:
                    drawn = self._drawn.get(drawn_key)
                if drawn is not None and drawn[0] == stamp and time.monotonic() - drawn[1] < REDRAW_S:
                    return drawn[2]
            data = panel.load(self.town, self.op, q)
            html = Markup(self.env.get_template(panel.template).render(csrf=csrf, columns=BOARD_COLUMNS, **data))
            if stamp is not None:
                with self._lock:
                    self._drawn[drawn_key] = (stamp, time.monotonic(), html)
                    self._drawn.move_to_end(drawn_key)
                    while len(self._drawn) > DRAWN_KEPT:
                        self._drawn.popitem(last=False)
        except InvalidInput as exc:  # the operator's own input (a filter): say so, nothing is stale
            return Markup(self.env.get_template("panel_error.html").render(kind="input", error=str(exc)))
        except Exception as exc:  # any failure to read: show the last data, marked stale
            log.warning(
                "dashboard panel %s could not be read: %s", name, exc, exc_info=not isinstance(exc, GastownError)
            )
            why = str(exc) if isinstance(exc, GastownError) else f"{type(exc).__name__}: the town could not be read"
            last = self._last.get(key)
            return Markup(
                self.env.get_template("panel_error.html").render(
                    kind="stale" if last else "unavailable",
                    error=" ".join(why.split())[:500],
                    since=time.strftime("%H:%M:%S", time.localtime(last[1])) if last else None,
                    body=last[0] if last else None,
                )
            )
        self._last[key] = (html, time.time())
        return html
