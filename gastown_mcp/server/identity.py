"""Who is calling: the fixed agent of a stdio/in-process server, or the agent whose bearer token came with
the HTTP request. Identity is re-read from the town on every call, so a removed agent stops working at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from gastown_mcp.errors import Unauthorized
from gastown_mcp.models import Agent
from gastown_mcp.town import Town


class TownTokenVerifier:
    """Maps a bearer token to the agent it belongs to; unknown or revoked tokens get 401.

    The HTTP gate verifies each request once and marks it `verified`, so the SDK's own check of the same
    request (which binds sessions to their agent) does not look the token up a second time.
    """

    def __init__(self, town: Town) -> None:
        self.town = town
        self._this_request: ContextVar[AccessToken | None] = ContextVar("gastown_verified", default=None)

    @contextlib.contextmanager
    def verified(self, access: AccessToken) -> Iterator[None]:
        reset = self._this_request.set(access)
        try:
            yield
        finally:
            self._this_request.reset(reset)

    async def verify_token(self, token: str) -> AccessToken | None:
        known = self._this_request.get()
        if known is not None and known.token == token:
            return known
        try:
            agent = await anyio.to_thread.run_sync(self.town.authenticate, token)
        except Unauthorized:
            return None
        return AccessToken(token=token, client_id=agent.name, scopes=[agent.role.value])


class Identity:
    """The agent behind the current call: `fixed` for stdio/in-process, else the bearer token's agent."""

    def __init__(self, town: Town, fixed: Agent | None) -> None:
        self.town = town
        self.fixed = fixed

    def current(self) -> Agent:
        if self.fixed is not None:
            return self.town.agent(self.fixed.name)  # re-read: a removed agent stops working at once
        token = get_access_token()
        if token is None:
            raise Unauthorized("no agent identity on this connection: send `Authorization: Bearer <token>`")
        return self.town.agent(token.client_id)
