"""`gastown agent logs` for people: Claude Code's stream-json session as one readable line per event.

Lines that are not JSON (the entrypoint's own remarks, a command other than Claude Code) pass through as they
are; `--json` skips all this and prints the raw lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

WIDTH = 160


def _short(value: Any, width: int = WIDTH) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _content(block: dict[str, Any]) -> str:
    """The text of a tool result, whose content is a string or a list of blocks."""
    content = block.get("content")
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


def _event(event: dict[str, Any]) -> Iterator[str]:
    kind = event.get("type")
    if kind == "system" and event.get("subtype") == "init":
        servers = ", ".join(f"{s.get('name')} {s.get('status')}" for s in event.get("mcp_servers") or [])
        yield f"session {event.get('session_id', '?')}: model {event.get('model', '?')}; MCP: {servers or 'none'}"
    elif kind in ("assistant", "user"):
        for block in (event.get("message") or {}).get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text", "").strip():
                yield f"{kind}: {_short(block['text'])}"
            elif block.get("type") == "tool_use":
                yield f"→ {block.get('name')} {_short(block.get('input') or {})}"
            elif block.get("type") == "tool_result":
                mark = "← error:" if block.get("is_error") else "←"
                yield f"{mark} {_short(_content(block))}"
    elif kind == "result":
        cost = event.get("total_cost_usd")
        spent = f", ${cost:.4f}" if isinstance(cost, int | float) else ""
        outcome = "error" if event.get("is_error") else event.get("subtype", "done")
        yield f"result: {outcome} after {event.get('num_turns', '?')} turns{spent}: {_short(event.get('result', ''))}"


def render_log(text: str) -> Iterator[str]:
    """Readable lines for a container's output."""
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and "type" in event:
            yield from _event(event)
        elif line.strip():
            yield line
