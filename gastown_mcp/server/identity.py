"""Who is calling: the fixed agent of a stdio/in-process server, or the agent whose bearer token came with
the HTTP request. Identity is checked on every call against the town's identity epoch (`Town.caller`), so a
removed, revoked or stopped agent stops working at once, while an unchanged one costs one indexed read.

The caller is resolved once per request, on the event loop: the HTTP gate resolves the token, the role
middleware and the tool body reuse that answer (and whether a nudge waits) through context variables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from mcp.server.auth.middleware.auth_context import auth_context_var, get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from gastown_mcp.errors import Unauthorized
from gastown_mcp.models import Agent
from gastown_mcp.town import Caller, Town


class TownTokenVerifier:
    """Maps a bearer token to the agent it belongs to; unknown or revoked tokens get 401.

    The HTTP gate verifies each request once and marks it `verified`: the role middleware reuses that answer,
    and the SDK sees the request's user and access token (which bind a session to its agent) as its own auth
    middleware would have set them.
    """

    def __init__(self, town: Town) -> None:
        self.town = town
        self._this_request: ContextVar[tuple[AccessToken, Caller] | None] = ContextVar("gastown_verified", default=None)

    def check(self, token: str) -> tuple[AccessToken, Caller] | None:
        """The token's access and caller (None for an unknown or revoked token); on the event loop: one indexed
        read while no agent changed (`Town.caller`)."""
        try:
            caller = self.town.caller(token=token)
        except Unauthorized:
            return None
        agent = caller.agent
        return AccessToken(token=token, client_id=agent.name, scopes=[agent.role.value]), caller

    @contextlib.contextmanager
    def verified(self, found: tuple[AccessToken, Caller]) -> Iterator[AuthenticatedUser]:
        """While the request is served, the role middleware and `get_access_token()` reuse `found`; yields the
        user the SDK expects in the request's scope."""
        user = AuthenticatedUser(found[0])
        reset, reset_user = self._this_request.set(found), auth_context_var.set(user)
        try:
            yield user
        finally:
            auth_context_var.reset(reset_user)
            self._this_request.reset(reset)

    def caller(self) -> Caller | None:
        """The caller the gate resolved for the request being served, if it did."""
        known = self._this_request.get()
        return known[1] if known is not None else None

    def resolved(self, token: str) -> Caller | None:
        """The caller the gate resolved for this request's `token`, if it did."""
        known = self._this_request.get()
        return known[1] if known is not None and known[0].token == token else None


class Identity:
    """The agent behind the current call: `fixed` for stdio/in-process, else the bearer token's agent."""

    def __init__(self, town: Town, fixed: Agent | None, verifier: TownTokenVerifier | None = None) -> None:
        self.town = town
        self.fixed = fixed
        self.verifier = verifier
        self._call: ContextVar[Caller | None] = ContextVar("gastown_caller", default=None)

    def resolve(self) -> Caller:
        """The caller of this request (resolved once per request) and whether a nudge waits for it."""
        if self.fixed is not None:
            return self.town.caller(name=self.fixed.name)
        token = get_access_token()
        if token is None:
            raise Unauthorized("no agent identity on this connection: send `Authorization: Bearer <token>`")
        if self.verifier is not None:
            known = self.verifier.resolved(token.token)
            if known is not None:
                return known
        return self.town.caller(token=token.token)

    @contextlib.contextmanager
    def serving(self, caller: Caller) -> Iterator[None]:
        """While a tool call runs, `current()` is `caller` without another look-up."""
        reset = self._call.set(caller)
        try:
            yield
        finally:
            self._call.reset(reset)

    def current(self) -> Agent:
        known = self._call.get()
        return known.agent if known is not None else self.resolve().agent
