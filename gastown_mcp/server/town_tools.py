"""The everyday `town_*` tools: town status, the agent list, nudges, mail, inbox and heartbeat.

Fleet control (spawn/stop/sling) and budgets have their own modules, `fleet` and `budgets`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from gastown_mcp.models import Agent, Message, TownStatus
from gastown_mcp.server.views import IDEMPOTENT, READ, WRITE, AgentList, Inbox, Sent
from gastown_mcp.town import Heartbeat, Town


def register(mcp: MCPServer, town: Town, run: Callable[..., Any]) -> None:
    @mcp.tool(description="Town overview: beads by status, ready count, agents by role.", annotations=READ)
    async def town_status() -> TownStatus:
        return await run(lambda a: town.status(a))

    @mcp.tool(description="List agents with role, rig and state.", annotations=READ)
    async def town_agents(
        role: Literal["overseer", "mayor", "refinery", "deacon", "witness", "polecat", "dog"] | None = None,
    ) -> AgentList:
        return AgentList(agents=await run(lambda a: town.agents(a, role)))

    @mcp.tool(description="Nudge an agent: the text reaches it with its next tool result.", annotations=WRITE)
    async def town_nudge(
        to: Annotated[str, Field(max_length=40)], text: Annotated[str, Field(max_length=4000)]
    ) -> Sent:
        m = await run(lambda a: town.nudge(a, to, text))
        return Sent(message_id=m.id, to=m.recipient, state=m.state.value)

    @mcp.tool(description="Read your mail and nudges; pass ack ids to acknowledge them.", annotations=IDEMPOTENT)
    async def town_inbox(
        ack: Annotated[list[int], Field(max_length=100)] = [],  # noqa: B006
        unread_only: bool = True,
    ) -> Inbox:
        def go(a: Agent) -> list[Message]:
            if ack:
                town.acknowledge(a, ack)
            return town.inbox(a, unread_only=unread_only)

        return Inbox(messages=await run(go))

    @mcp.tool(description="Send mail to another agent (e.g. the mayor).", annotations=WRITE)
    async def town_mail_send(
        to: Annotated[str, Field(max_length=40)],
        subject: Annotated[str, Field(max_length=200)],
        body: Annotated[str, Field(max_length=20000)],
        thread: Annotated[str | None, Field(max_length=100)] = None,
    ) -> Sent:
        m = await run(lambda a: town.mail_send(a, to, subject, body, thread))
        return Sent(message_id=m.id, to=m.recipient, state=m.state.value)

    @mcp.tool(description="Say you are alive: renews your bead leases; shows what you hold.", annotations=IDEMPOTENT)
    async def town_heartbeat() -> Heartbeat:
        return await run(lambda a: town.heartbeat(a))
