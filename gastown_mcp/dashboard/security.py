"""Who may use the dashboard and how: the operator's login (token -> session cookie), a CSRF token per session
checked on every action, same-origin checks on every POST, a Host allow-list (DNS rebinding), and a brake
on wrong tokens. Sessions live in this process: restarting the town logs the operator out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "gastown_session"
FAILED_LOGINS_PER_MINUTE = 10
MAX_SESSIONS = 64


@dataclass
class Session:
    id: str
    csrf: str
    expires: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once on the next page


class Sessions:
    def __init__(self, hours: float) -> None:
        self.seconds = hours * 3600
        self._live: dict[str, Session] = {}
        self._failures: deque[float] = deque()

    def start(self) -> Session:
        now = time.time()
        self._live = {k: s for k, s in self._live.items() if s.expires > now}
        while len(self._live) >= MAX_SESSIONS:  # the oldest login goes first
            self._live.pop(min(self._live, key=lambda k: self._live[k].expires))
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self.seconds)
        self._live[session.id] = session
        return session

    def of(self, request: Request) -> Session | None:
        sid = request.cookies.get(COOKIE)
        session = self._live.get(sid) if sid else None
        if session is None or session.expires < time.time():
            return None
        return session

    def end(self, session: Session) -> None:
        self._live.pop(session.id, None)

    def too_many_failures(self) -> bool:
        cutoff = time.monotonic() - 60
        while self._failures and self._failures[0] < cutoff:
            self._failures.popleft()
        return len(self._failures) >= FAILED_LOGINS_PER_MINUTE

    def failed(self) -> None:
        self._failures.append(time.monotonic())


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())


def same_origin(request: Request) -> bool:
    """A POST from a page of this dashboard: the browser's Origin (or Referer) names this host, and the fetch
    metadata does not say cross-site. A client that sends neither (a script) still needs the CSRF token."""
    host = request.headers.get("host", "")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc == host
    return True


def host_allowed(request: Request, allowed: set[str]) -> bool:
    return request.headers.get("host", "") in allowed


def safe_next(path: str | None, default: str = "/") -> str:
    """Only a path on this dashboard (never another site) to go back to after an action."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return default
    return path
