"""A scripted stand-in for the Anthropic Messages API, for tests and the demo. It is not a model.

It speaks `POST /v1/messages` (JSON and SSE) and `/v1/messages/count_tokens`, answers from a `Script`,
reports usage from request and reply sizes, and records every request it was sent.
"""

from gastown_mcp.standin.app import MODEL_ID, SERVER_HEADER, RecordedRequest, Standin, build_standin
from gastown_mcp.standin.conversation import Conversation, Text, ToolCall, Turn, count_tokens
from gastown_mcp.standin.polecat import Polecat
from gastown_mcp.standin.scripts import Echo, Fails, Hello, Script, ScriptedError, Sequenced, script_named

__all__ = [
    "MODEL_ID",
    "SERVER_HEADER",
    "Conversation",
    "Echo",
    "Fails",
    "Hello",
    "Polecat",
    "RecordedRequest",
    "Script",
    "ScriptedError",
    "Sequenced",
    "Standin",
    "Text",
    "ToolCall",
    "Turn",
    "build_standin",
    "count_tokens",
    "script_named",
]
