"""The stdio server behind the front (gastown_mcp/cli/stdio_front.py): it reads the wire the front took, starting
with the first message the front already read, and writes to it, except its own answer to a first `initialize`
that the front already sent (that one is checked against what was sent, and dropped).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, BinaryIO, Protocol, cast

import anyio
from mcp.server.stdio import stdio_server

from gastown_mcp.models import Agent
from gastown_mcp.server.build import build_server
from gastown_mcp.town import Town


class Wire(Protocol):
    """The wire as the front hands it over (`gastown_mcp.cli.stdio_front.Wire`)."""

    reader: BinaryIO
    first: bytes
    init_id: Any

    def write(self, data: bytes) -> None: ...

    def server_answered(self, message: dict[str, Any]) -> bool: ...


class _Lines:
    """The wire's lines as the SDK's stdio transport reads them: the first message, then the rest of stdin."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        line = self.wire.first
        while line:
            yield line.decode("utf-8", errors="replace")
            line = await anyio.to_thread.run_sync(self.wire.reader.readline, abandon_on_cancel=True)


class _Out:
    """The wire's stdout as the SDK's stdio transport writes it (one message a line), watching for the
    server's answer to the first `initialize`."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.watching = wire.init_id is not None

    async def write(self, text: str) -> None:
        if self.watching and self._is_init_answer(text):
            self.watching = False
            if not self.wire.server_answered(json.loads(text)):
                return  # the client has this answer already
        await anyio.to_thread.run_sync(self.wire.write, text.encode())

    def _is_init_answer(self, text: str) -> bool:
        try:
            message = json.loads(text)
        except ValueError:
            return False
        return (
            isinstance(message, dict)
            and "method" not in message
            and message.get("id") == self.wire.init_id
            and ("result" in message or "error" in message)
        )

    async def flush(self) -> None:
        return None


def serve_wire(town: Town, agent: Agent, wire: Wire) -> None:
    """Serve MCP as `agent` (a local, trusted process) over the wire until stdin ends."""
    server = build_server(town, agent)

    async def run() -> None:
        async with stdio_server(cast(Any, _Lines(wire)), cast(Any, _Out(wire))) as (read_stream, write_stream):
            lowlevel = server._lowlevel_server
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())

    anyio.run(run)
