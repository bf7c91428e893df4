"""The dashboard as a Starlette app: pages, panel fragments, the live feed (server-sent events woken by the
journal), the operator's actions, `/metrics`, and the login. Everything it reads or does goes through `Town`
as the operator; the town's own checks and events apply as for the CLI.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gastown_mcp.config import DashboardSection
from gastown_mcp.dashboard import metrics as prom
from gastown_mcp.dashboard.actions import ACTIONS
from gastown_mcp.dashboard.panels import PANELS, POLLED, PanelRenderer
from gastown_mcp.dashboard.security import (
    COOKIE,
    Session,
    Sessions,
    csrf_ok,
    host_allowed,
    safe_next,
    same_origin,
)
from gastown_mcp.errors import GastownError, Unauthorized
from gastown_mcp.follow import JournalBell
from gastown_mcp.models import Event
from gastown_mcp.town import Town, operator

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
FEED_BATCH = 200
KEEPALIVE_S = 30  # a comment on a quiet live feed, so a dead connection is noticed

# (path, title, panels shown on the page with their query)
PAGES: dict[str, tuple[str, list[str]]] = {
    "/": ("Overview", ["needs", "board", "agents", "merges", "spend", "feed"]),
    "/board": ("Beads", ["board"]),
    "/agents": ("Agents", ["agents"]),
    "/merges": ("Merge queue", ["merges"]),
    "/convoys": ("Convoys", ["convoys"]),
    "/spend": ("Spend", ["spend"]),
    "/feed": ("Live feed", ["feed"]),
}


class Guard:
    """Pure ASGI: refuses unknown Host headers (DNS rebinding) and adds the security headers to every answer."""

    def __init__(self, app: ASGIApp, allowed: set[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not host_allowed(Request(scope), self.allowed):
            await PlainTextResponse("unknown Host header; add it to [dashboard] allowed_hosts", 421)(
                scope, receive, send
            )
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class Dashboard:
    def __init__(self, town: Town, settings: DashboardSection) -> None:
        self.town = town
        self.settings = settings
        self.op = operator()
        self.sessions = Sessions(settings.session_hours)
        self.observed = prom.Observed()
        self.bell = JournalBell(town.settings.journal_path)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
        )
        self.env.filters["short"] = lambda at: (at or "")[11:19]
        self.env.filters["day"] = lambda at: (at or "")[:16].replace("T", " ")
        self.env.filters["usd"] = lambda v: "-" if v is None else f"${v:,.4f}"
        self.env.filters["num"] = lambda v: "-" if v is None else f"{v:,}"
        self.env.filters["qs"] = lambda q, **kw: urlencode({**{k: v for k, v in q.items() if v}, **kw})
        self.panels = PanelRenderer(self.env, town, self.op)
        self.static = {name: (HERE / "static" / name).read_bytes() for name in STATIC}

    # -- helpers ---------------------------------------------------------------------------------------
    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(fn)

    def _html(self, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("town_name", self.town.settings.town.name)
        ctx.setdefault("refresh", self.settings.refresh_seconds)
        return HTMLResponse(self.env.get_template(template).render(**ctx), status)

    async def _panel(self, name: str, query: dict[str, str], session: Session) -> Markup:
        return Markup(await self._call(lambda: self.panels.render(name, query, session.csrf)))

    def _login_first(self, request: Request) -> Response:
        if request.method == "GET" and not request.url.path.startswith(("/panel/", "/live")):
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
        return PlainTextResponse("log in first: the dashboard is for the operator (`gastown dashboard token`)", 401)

    # -- pages -----------------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        session = self.sessions.of(request)
        if session is None:
            return self._login_first(request)
        path = request.url.path
        query = dict(request.query_params)
        if path.startswith("/bead/"):
            query["id"] = request.path_params["bead_id"]
            title, names = f"Bead {query['id']}", ["bead"]
        elif path.startswith("/agent/"):
            query["name"] = request.path_params["name"]
            title, names = f"Agent {query['name']}", ["agent"]
        else:
            title, names = PAGES[path]
        try:  # the live feed starts after the last event before the panels are read: no change is missed
            last = await self._call(lambda: self.town.last_event_id(self.op))
        except GastownError:
            last = None  # the panels say why
        shown = {}
        for name in ["status", *names]:
            q = {} if name == "status" or path == "/" else query
            url = "/panel/" + name + ("?" + urlencode(q) if q else "")
            shown[name] = (PANELS[name].title, url, await self._panel(name, q, session))
        flash, session.flash = session.flash, []
        return self._html(
            "page.html", title=title, path=path, panels=shown, csrf=session.csrf, flash=flash, last=last, polled=POLLED
        )

    async def fragment(self, request: Request) -> Response:
        session = self.sessions.of(request)
        if session is None:
            return self._login_first(request)
        name = request.path_params["name"]
        if name not in PANELS:
            return PlainTextResponse(f"no panel {name!r}", 404)
        return HTMLResponse(await self._panel(name, dict(request.query_params), session))

    # -- login -----------------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        nxt = safe_next(request.query_params.get("next"))
        if request.method == "GET":
            return self._html("login.html", next=nxt, error="")
        if not same_origin(request):
            return PlainTextResponse("cross-site login refused", 403)
        if self.sessions.too_many_failures():
            return self._html("login.html", 429, next=nxt, error="too many wrong tokens; wait a minute")
        form = await request.form()
        token = str(form.get("token") or "")
        nxt = safe_next(str(form.get("next") or ""))
        try:
            await self._call(lambda: self.town.operator_login(token))
        except Unauthorized as exc:
            self.sessions.failed()
            return self._html("login.html", 401, next=nxt, error=str(exc))
        session = self.sessions.start()
        response = RedirectResponse(nxt, 303)
        response.set_cookie(
            COOKIE, session.id, max_age=int(self.sessions.seconds), httponly=True, samesite="strict", path="/"
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = self.sessions.of(request)
        if session is not None:
            form = await request.form()
            if not same_origin(request) or not csrf_ok(session, str(form.get("csrf") or "")):
                return PlainTextResponse("refused: not from this dashboard", 403)
            self.sessions.end(session)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- actions ---------------------------------------------------------------------------------------
    async def act(self, request: Request) -> Response:
        session = self.sessions.of(request)
        if session is None:
            return self._login_first(request)
        if not same_origin(request):
            return PlainTextResponse("refused: a cross-site request may not act on the town", 403)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not csrf_ok(session, form.get("csrf")):
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong; reload the page", 403)
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return PlainTextResponse(f"no action {request.path_params['action']!r}", 404)
        try:
            done = await self._call(lambda: action(self.town, self.op, form))
            session.flash.append(("ok", done))
        except GastownError as exc:
            session.flash.append(("error", " ".join(str(exc).split())))
        return RedirectResponse(safe_next(form.get("next")), 303)

    # -- live feed -------------------------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        """Server-sent events: each town event (`town`), `touch` for writes without an event (model usage, an
        agent's heartbeat; at most one per `refresh_seconds`), `stale` when the town cannot be read and `fresh`
        when it can again (the page redraws its panels on each). Woken by the journal's file watch, shared by
        every open feed (`JournalBell`); while the town is quiet a feed only checks, every `refresh_seconds`,
        that the town can still be read and that no event was missed, and sends a keep-alive every KEEPALIVE_S."""
        if self.sessions.of(request) is None:
            return self._login_first(request)
        raw = request.headers.get("last-event-id") or request.query_params.get("after") or ""
        start = int(raw) if raw.isdigit() else None  # None: from the town's last event, once it can be read
        quiet_s = self.settings.refresh_seconds

        def stale(exc: GastownError) -> str:
            return f"event: stale\ndata: {json.dumps(' '.join(str(exc).split()))}\n\n"

        async def stream() -> Any:
            cursor, failing = start, False
            yield "retry: 2000\n\n"
            sent = touched = time.monotonic()
            touch_due: float | None = None  # a write without events (usage, a heartbeat) to tell the page about
            async with self.bell.listen() as bell:
                changed, rung = True, False  # rung: the journal or the WAL changed (not the first or a quiet read)
                while True:
                    if changed:
                        try:
                            if cursor is None:
                                cursor = await self._call(lambda: self.town.last_event_id(self.op))
                            events: list[Event] = await self._call(functools.partial(self._events_after, cursor))
                        except GastownError as exc:
                            events = []
                            if not failing:
                                failing = True
                                yield stale(exc)
                        else:
                            if failing:
                                failing = False
                                yield "event: fresh\ndata: {}\n\n"
                            if rung and not events and touch_due is None:
                                touch_due = max(time.monotonic(), touched + quiet_s)  # at most one per quiet_s
                        for event in events:
                            yield f"id: {event.id}\nevent: town\ndata: {event.model_dump_json()}\n\n"
                            cursor = event.id
                            sent = touched = time.monotonic()
                            touch_due = None  # the page redraws for the event
                        if len(events) == FEED_BATCH:
                            continue  # more are waiting
                    now = time.monotonic()
                    if touch_due is not None and now >= touch_due:
                        yield "event: touch\ndata: {}\n\n"
                        sent = touched = now
                        touch_due = None
                    changed = rung = await bell.wait(quiet_s if touch_due is None else min(quiet_s, touch_due - now))
                    if changed or (touch_due is not None and time.monotonic() >= touch_due):
                        continue
                    if self.sessions.of(request) is None:
                        return  # logged out or expired
                    try:  # quiet: can the town still be read, and was nothing missed?
                        changed = cursor is None or await self._call(lambda: self.town.last_event_id(self.op)) > cursor
                    except GastownError as exc:
                        if not failing:
                            failing = True
                            yield stale(exc)
                    else:
                        if failing and not changed:
                            failing = False
                            yield "event: fresh\ndata: {}\n\n"
                    if time.monotonic() - sent >= KEEPALIVE_S:
                        sent = time.monotonic()
                        yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})

    def _events_after(self, cursor: int) -> list[Event]:
        return self.town.events(self.op, after_id=cursor, limit=FEED_BATCH)

    # -- the rest --------------------------------------------------------------------------------------
    async def metrics(self, request: Request) -> Response:
        def read() -> prom.MetricsSnapshot:
            self.observed.catch_up(self.town, self.op)
            return self.town.metrics(self.op)

        snapshot = await self._call(read)
        return PlainTextResponse(prom.render(snapshot, self.observed), media_type=prom.CONTENT_TYPE)

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            return PlainTextResponse("not found", 404)
        return Response(self.static[name], media_type=STATIC[name])

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")


def build_dashboard(town: Town, settings: DashboardSection, hosts: list[str]) -> ASGIApp:
    """The dashboard app for `town`; `hosts` are the host:port values it is reached by (its Host allow-list)."""
    d = Dashboard(town, settings)
    get: Callable[[Request], Awaitable[Response]] = d.page
    routes = [Route(path, get) for path in PAGES]
    routes += [
        Route("/bead/{bead_id}", d.page),
        Route("/agent/{name}", d.page),
        Route("/panel/{name}", d.fragment),
        Route("/live", d.live),
        Route("/act/{action}", d.act, methods=["POST"]),
        Route("/login", d.login, methods=["GET", "POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/metrics", d.metrics),
        Route("/static/{name}", d.static_file),
        Route("/healthz", d.healthz),
    ]
    app = Starlette(routes=routes)
    app.state.dashboard = d
    return Guard(app, {*hosts, *settings.allowed_hosts})
