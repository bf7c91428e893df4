"""Mail and nudges in the town API: send, read, acknowledge, deliver with the next tool result, escalate.

A nudge waits as `sent` until it rides on the recipient's next tool result (or the witness resumes an ended
session with it as the prompt); taking it marks it delivered in the same transaction, so it arrives once.
"""

from __future__ import annotations

from collections.abc import Sequence

from gastown_mcp.errors import InvalidInput, NotFound
from gastown_mcp.models import Agent, AgentState, Message, MessageKind, Role
from gastown_mcp.town import guard
from gastown_mcp.town.base import OPERATOR, TownBase


class MailAPI(TownBase):
    def nudge(self, actor: Agent, to: str, text: str) -> Message:
        self._require(actor, "town.nudge", "nudge agents")
        self._recipient(to)
        if not text.strip():
            raise InvalidInput("a nudge needs text saying what the agent should do")
        return self._store.messages.send(actor.name, to, MessageKind.nudge, guard.text("text", text, 4000))

    def nudges(self, actor: Agent, to: str | None = None, limit: int = 50) -> list[Message]:
        """Nudges town-wide or to one agent, newest first, in every state (sent, delivered, acknowledged)."""
        self._require(actor, "town.admin", "list every agent's nudges")
        return self._store.messages.nudges(to, guard.limit(limit))

    def mail_send(self, actor: Agent, to: str, subject: str, body: str, thread: str | None = None) -> Message:
        self._require(actor, "town.mail", "send mail")
        self._recipient(to)
        if not body.strip():
            raise InvalidInput("mail needs a body")
        return self._store.messages.send(
            actor.name, to, MessageKind.mail, guard.text("body", body), guard.text("subject", subject, 200), thread
        )

    def inbox(self, actor: Agent, unread_only: bool = True, limit: int = 20) -> list[Message]:
        self._require(actor, "town.inbox", "read an inbox")
        return self._store.messages.inbox(actor.name, unread_only=unread_only, limit=guard.limit(limit))

    def acknowledge(self, actor: Agent, ids: Sequence[int]) -> int:
        self._require(actor, "town.inbox", "acknowledge messages")
        return self._store.messages.acknowledge(actor.name, list(ids))

    def take_nudges(self, actor: Agent) -> list[Message]:
        """Pending nudges for the caller, marked delivered (they ride on its next tool result)."""
        if actor.name == OPERATOR or not self._store.messages.has_pending_nudge(actor.name):
            return []
        return self._store.messages.deliver_nudges(actor.name)

    def escalate(self, actor: Agent, subject: str, body: str) -> Message:
        """Mail the mayor (or the operator when the town has no mayor)."""
        guard.require(actor, "town.mail", "escalate")
        mayors = self._store.agents.all(role=Role.mayor)
        to = mayors[0].name if mayors else OPERATOR
        return self._store.messages.send(actor.name, to, MessageKind.mail, body, subject[:200])

    def _recipient(self, name: str) -> None:
        if name == OPERATOR:
            return
        found = self._store.agents.find(name)
        if found is None or found.state is AgentState.removed:
            raise NotFound(f"no agent {name!r} to send to; see town_agents for names")
