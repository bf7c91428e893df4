"""Reads token usage out of Messages API responses as they pass: SSE incrementally, JSON at the end.

Streams report usage in `message_start` (input, cache write/read) and `message_delta` (cumulative output,
and on newer APIs cumulative input too). A stream cut short is metered from the deltas that did pass: their
text's UTF-8 bytes / 4 (counting characters would charge a 4-byte emoji or a 3-byte CJK character as a quarter
or a third of what it is).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from gastown_mcp.town.budgets import Usage

BYTES_PER_TOKEN = 4  # the usual rule of thumb, and the stand-in's own count
DELTAS_KEPT_BYTES = 256 * 1024  # unparsed content_block_delta JSON a stream may hold before it is counted
_SKIPPED = frozenset({b"ping", b"content_block_start", b"content_block_stop"})

_FIELDS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_creation_input_tokens": "cache_creation_tokens",
    "cache_read_input_tokens": "cache_read_tokens",
}


@dataclass
class Meter:
    """Feed it response bytes; ask it for `usage()` and `model` whenever the response ends.

    A `content_block_delta` only matters if the stream ends unfinished (its text is then what is charged), so
    its JSON is kept unparsed and parsed only then, or once `DELTAS_KEPT_BYTES` of it are waiting: a stream
    that finishes, the usual case, parses only its `message_start`, `message_delta` and `message_stop`."""

    model: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    produced_bytes: int = 0
    finished: bool = False
    error: str | None = None  # an SSE `error` event's message: why a started stream failed
    _buf: bytearray = field(default_factory=bytearray)
    _event: bytes = b""
    _deltas: list[bytes] = field(default_factory=list)  # content_block_delta data not parsed yet
    _deltas_bytes: int = 0

    # -- SSE ---------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        if self._buf:  # the start of a line cut by the previous chunk
            chunk = bytes(self._buf) + chunk
            self._buf.clear()
        lines = chunk.split(b"\n")
        rest = lines.pop()  # after the last newline: a line not finished yet
        for line in lines:
            self._line(line[:-1] if line.endswith(b"\r") else line)
        if rest:
            self._buf += rest

    def _line(self, line: bytes) -> None:
        if line.startswith(b"event:"):
            self._event = line[6:].strip()
        elif line.startswith(b"data:"):
            self._data(line[5:].strip())
        elif not line:
            self._event = b""

    def _data(self, raw: bytes) -> None:
        event = self._event
        if event in _SKIPPED:
            return
        if event == b"content_block_delta":
            self._deltas.append(raw)
            self._deltas_bytes += len(raw)
            if self._deltas_bytes >= DELTAS_KEPT_BYTES:
                self._count_deltas()
            return
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        kind = str(data.get("type", event.decode(errors="replace")))
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = message.get("model") or self.model
            self._take(message.get("usage"))
        elif kind == "message_delta":
            self._take(data.get("usage"))
        elif kind == "content_block_delta":  # one without its `event:` line
            self._delta(data)
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            error = data.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.error = f"stream failed: {message or error}"

    def _delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta") or {}
        if not isinstance(delta, dict):
            return
        for key in ("text", "partial_json", "thinking"):
            value = delta.get(key)
            if isinstance(value, str):
                self.produced_bytes += len(value.encode())

    def _count_deltas(self) -> None:
        deltas, self._deltas, self._deltas_bytes = self._deltas, [], 0
        for raw in deltas:
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("type", "content_block_delta") == "content_block_delta":
                self._delta(data)

    # -- JSON --------------------------------------------------------------------------------------
    def read_json(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return
        if isinstance(data, dict):
            self.model = data.get("model") or self.model
            self._take(data.get("usage"))
            self.finished = True

    def _take(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for wire, ours in _FIELDS.items():
            value = usage.get(wire)
            if isinstance(value, int):
                self.counts[ours] = value

    def usage(self) -> Usage:
        """What was consumed; for an unfinished stream, output is at least what the deltas carried."""
        counts = dict(self.counts)
        if not self.finished:
            self._count_deltas()
        if not self.finished and self.produced_bytes:
            estimated = math.ceil(self.produced_bytes / BYTES_PER_TOKEN)
            counts["output_tokens"] = max(counts.get("output_tokens", 0), estimated)
        return Usage(**counts)
