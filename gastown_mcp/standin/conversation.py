"""Both sides of one Messages API exchange, plus the stand-in's token arithmetic.

Scripts look at the request through `Conversation` and answer with a `Turn` of `Text` and `ToolCall` blocks;
`Tokens` turns request and reply sizes into usage numbers (about four bytes a token) and plays prompt caching
for requests that carry `cache_control`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

BYTES_PER_TOKEN = 4


def count_tokens(value: Any) -> int:
    """Tokens for a piece of request or reply: UTF-8 bytes / 4, rounded up, at least one."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return max(1, math.ceil(len(text.encode()) / BYTES_PER_TOKEN))


def block_text(content: Any) -> str:
    """The text of a message's or tool_result's content, whether a string or a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for b in content:
            if isinstance(b, dict):
                if b.get("type") == "text":
                    parts.append(str(b.get("text", "")))
                elif b.get("type") == "tool_result":
                    parts.append(block_text(b.get("content", "")))
        return "\n".join(parts)
    return ""


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    text: str
    is_error: bool


@dataclass(frozen=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A tool call the stand-in makes (the reply-side twin of `ToolUse`)."""

    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: "toolu_standin_" + secrets.token_hex(8))


@dataclass(frozen=True)
class Turn:
    """One assistant turn: what a script answers a request with."""

    blocks: Sequence[Text | ToolCall]
    stop_reason: str | None = None

    @property
    def resolved_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolCall) for b in self.blocks) else "end_turn"


@dataclass
class Conversation:
    """One request body: model, system, tools and messages, with helpers scripts need."""

    body: dict[str, Any]
    messages: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        msgs = self.body.get("messages")
        self.messages = [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def system_text(self) -> str:
        system = self.body.get("system", "")
        return block_text(system) if not isinstance(system, str) else system

    @property
    def tools(self) -> dict[str, dict[str, Any]]:
        tools = self.body.get("tools") or []
        return {t["name"]: t for t in tools if isinstance(t, dict) and "name" in t}

    def user_texts(self) -> list[str]:
        """Text of every user message, oldest first (tool results excluded)."""
        out = []
        for m in self.messages:
            if m.get("role") != "user":
                continue
            content = m.get("content", "")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out.extend(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
        return out

    @property
    def last_user_text(self) -> str:
        texts = self.user_texts()
        return texts[-1] if texts else ""

    def last_tool_uses(self) -> list[ToolUse]:
        """The tool calls of the latest assistant message."""
        for m in reversed(self.messages):
            if m.get("role") == "assistant":
                content = m.get("content")
                if not isinstance(content, list):
                    return []
                return [
                    ToolUse(id=str(b.get("id", "")), name=str(b.get("name", "")), input=b.get("input") or {})
                    for b in content
                    if isinstance(b, dict) and b.get("type") == "tool_use"
                ]
        return []

    def last_tool_results(self) -> list[ToolResult]:
        """The tool results carried by the latest user message."""
        if not self.messages or self.messages[-1].get("role") != "user":
            return []
        content = self.messages[-1].get("content")
        if not isinstance(content, list):
            return []
        return [
            ToolResult(
                tool_use_id=str(b.get("tool_use_id", "")),
                text=block_text(b.get("content", "")),
                is_error=bool(b.get("is_error", False)),
            )
            for b in content
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]

    def working_directory(self) -> str | None:
        """Claude Code states its working directory in the system prompt's environment section."""
        m = re.search(r"(?:Primary working directory|Working directory):\s*(\S+)", self.system_text)
        return m.group(1) if m else None


@dataclass
class Tokens:
    """Usage arithmetic with a prompt cache keyed by the hash of each cache_control prefix."""

    seen_prefixes: set[str] = field(default_factory=set)

    def segments(self, body: dict[str, Any]) -> list[tuple[Any, bool]]:
        """The request in cache order (tools, system, messages) as (piece, has cache_control) pairs."""
        out: list[tuple[Any, bool]] = []
        for t in body.get("tools") or []:
            out.append((t, isinstance(t, dict) and "cache_control" in t))
        system = body.get("system")
        if isinstance(system, str) and system:
            out.append((system, False))
        elif isinstance(system, list):
            out.extend((b, isinstance(b, dict) and "cache_control" in b) for b in system)
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                out.extend((b, isinstance(b, dict) and "cache_control" in b) for b in content)
            else:
                out.append((content or "", False))
        return out

    def input_total(self, body: dict[str, Any]) -> int:
        return sum(count_tokens(piece) for piece, _ in self.segments(body)) + 3 * len(body.get("messages") or [])

    def input_usage(self, body: dict[str, Any]) -> dict[str, int]:
        """input_tokens / cache_creation_input_tokens / cache_read_input_tokens for one request."""
        total = self.input_total(body)
        digest = hashlib.sha256()
        running = 0
        breakpoints: list[tuple[str, int]] = []
        for piece, marked in self.segments(body):
            digest.update(json.dumps(piece, sort_keys=True).encode())
            running += count_tokens(piece)
            if marked:
                breakpoints.append((digest.copy().hexdigest(), running))
        read = 0
        for key, upto in reversed(breakpoints):
            if key in self.seen_prefixes:
                read = upto
                break
        written = breakpoints[-1][1] - read if breakpoints else 0
        self.seen_prefixes.update(key for key, _ in breakpoints)
        return {
            "input_tokens": total - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }
