"""Routes: which upstream serves an agent's request for a model, the one matcher, and the operator's surface
over it (`gastown route list|add|remove`). Runtime routes live in the store; town.toml's follow them.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Sequence
from typing import Protocol

from pydantic import Field

from gastown_mcp.config import RouteRule
from gastown_mcp.errors import InvalidInput, NotFound
from gastown_mcp.models import Agent, StrictModel, Verb
from gastown_mcp.store.db import Database
from gastown_mcp.store.usage import UsageRepo
from gastown_mcp.town.agents import AgentsAPI

__all__ = ["Route", "RouteEntry", "Routes", "RoutesAPI"]


class HasDatabase(Protocol):
    @property
    def db(self) -> Database: ...


class RouteEntry(StrictModel):
    """A route as the gateway tries it, with where it comes from."""

    source: str = Field(description="runtime (set with `gastown route add`), town.toml, or default")
    agent: str
    model: str
    upstream: str


Route = RouteRule  # one route model: a runtime route and a town.toml route are the same thing


class Routes:
    """Which upstream serves an agent's request for a model: the one matcher.

    Runtime routes (set with `set`, kept in the store) are tried first, most specific first, then the
    `[gateway] routes` of town.toml in their order, then the default upstream. The runtime table is cached and
    re-read only when it changed (by this process or another), so a request costs one tiny query, not a sort.
    """

    def __init__(self, store: HasDatabase, configured: Sequence[RouteRule] = (), default: str | None = None) -> None:
        self.db = store.db
        self.repo = UsageRepo(store.db)
        self.configured = list(configured)
        self.default = default
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, str], list[Route]] | None = None

    def set(self, actor: str, route: Route) -> Route:
        with self.db.write() as tx:
            self.repo.set_route(tx, route.agent, route.model, route.upstream, actor)
            tx.event(
                actor, Verb.route_set, agent=route.agent if "*" not in route.agent else None, after=route.model_dump()
            )
        self._forget()
        return route

    def clear(self, actor: str, agent: str = "*", model: str = "*") -> bool:
        with self.db.write() as tx:
            gone = self.repo.delete_route(tx, agent, model)
            if gone:
                tx.event(actor, Verb.route_cleared, before={"agent": agent, "model": model})
        self._forget()
        return gone

    def list(self) -> list[Route]:
        """Runtime routes, most specific first: exact agent before agent globs, then the longer pattern."""
        version = self.repo.routes_version()
        with self._lock:
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1]
        rows = self.repo.routes()
        routes = sorted(
            (Route(agent=r["agent"], model=r["model"], upstream=r["upstream"]) for r in rows), key=_specificity
        )
        with self._lock:
            self._cached = (version, routes)
        return routes

    def pick(self, agent: str, model: str) -> str | None:
        """The upstream for this agent and model; None only when nothing matches and there is no default."""
        for r in (*self.list(), *self.configured):
            if fnmatch.fnmatchcase(agent, r.agent) and fnmatch.fnmatchcase(model, r.model):
                return r.upstream
        return self.default

    def _forget(self) -> None:
        with self._lock:
            self._cached = None


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _specificity(r: Route) -> tuple[bool, int, bool, int]:
    # Exact beats glob; among globs, the one with more literal characters wins.
    return (_is_glob(r.agent), -len(r.agent.strip("*")), _is_glob(r.model), -len(r.model.strip("*")))


class RoutesAPI(AgentsAPI):
    """Routes on `Town`: the gateway's settings for who is served where, read with budgets and set with them."""

    routes: Routes

    # -- routes: which upstream serves which agent and model (gateway settings, so budget-setters set them) --
    def route_table(self, actor: Agent) -> list[RouteEntry]:
        """Every route in the order the gateway tries them: runtime routes, town.toml's, then the default."""
        self._require(actor, "town.budget", "read the gateway's routes")
        out = [RouteEntry(source="runtime", **r.model_dump()) for r in self.routes.list()]
        out += [RouteEntry(source="town.toml", **r.model_dump()) for r in self.routes.configured]
        default = self.settings.gateway.default_upstream
        out.append(RouteEntry(source="default", agent="*", model="*", upstream=default))
        return out

    def route_add(self, actor: Agent, upstream: str, agent: str = "*", model: str = "*") -> RouteEntry:
        """Send requests from agents matching `agent` for models matching `model` to `upstream` (replaces the
        runtime route with the same agent and model)."""
        self._require(actor, "town.budget.set", "set the gateway's routes")
        known = sorted(self.settings.gateway.upstreams)
        if upstream not in known:
            raise InvalidInput(
                f"no upstream {upstream!r} in this town: use one of {known}, or define it under "
                f"[gateway.upstreams.{upstream}] in town.toml (base_url, key_env or key_file) first"
            )
        for field, value in (("agent", agent), ("model", model)):
            if not value.strip() or len(value) > 200:
                raise InvalidInput(f"route {field} must be a name or glob of 1-200 characters, not {value!r}")
        route = self.routes.set(actor.name, Route(agent=agent, model=model, upstream=upstream))
        return RouteEntry(source="runtime", **route.model_dump())

    def route_remove(self, actor: Agent, agent: str = "*", model: str = "*") -> None:
        self._require(actor, "town.budget.set", "set the gateway's routes")
        if not self.routes.clear(actor.name, agent, model):
            configured = any(r.agent == agent and r.model == model for r in self.routes.configured)
            where = " (that one is in town.toml: edit [[gateway.routes]] there)" if configured else ""
            raise NotFound(
                f"no runtime route for agent {agent!r} and model {model!r}{where}; `gastown route list` shows them"
            )
