"""Scripts decide the stand-in's next assistant turn from the conversation; nothing here is a model.

A script is any object with `name` and `next_turn(conversation) -> Turn` (the turn types live beside
`Conversation`). `script_named()` builds the ones the CLI knows: hello, echo, error:<status>, polecat and
planner (the refinery's and deacon's tools, see `planner.py`, else polecat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gastown_mcp.standin.conversation import Conversation, Text, Turn
from gastown_mcp.standin.planner import Models
from gastown_mcp.standin.polecat import Polecat


class ScriptedError(Exception):
    """Raised by a script to make the stand-in answer with an Anthropic-format error."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


class Script(Protocol):
    name: str

    def next_turn(self, conversation: Conversation) -> Turn: ...


@dataclass
class Hello:
    """Always says the same short sentence."""

    name: str = "hello"
    text: str = "Hello from the scripted stand-in."

    def next_turn(self, conversation: Conversation) -> Turn:
        return Turn([Text(self.text)])


@dataclass
class Echo:
    """Repeats the last user text back."""

    name: str = "echo"

    def next_turn(self, conversation: Conversation) -> Turn:
        return Turn([Text("echo: " + (conversation.last_user_text or "(nothing)"))])


@dataclass
class Sequenced:
    """Plays a fixed list of turns, one per request, then repeats the last one (for tests)."""

    turns: list[Turn]
    name: str = "sequenced"
    played: int = 0

    def next_turn(self, conversation: Conversation) -> Turn:
        turn = self.turns[min(self.played, len(self.turns) - 1)]
        self.played += 1
        return turn


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Fails:
    """Answers every request with one HTTP error (to see how clients treat each status)."""

    status: int
    name: str = "error"

    def next_turn(self, conversation: Conversation) -> Turn:
        kind = ERROR_TYPES.get(self.status, "api_error")
        raise ScriptedError(self.status, kind, f"scripted stand-in error {self.status} ({kind})")


def script_named(name: str) -> Script:
    """The scripts the CLI can start by name."""
    if name == "hello":
        return Hello()
    if name == "echo":
        return Echo()
    if name == "polecat":
        return Polecat()
    if name == "planner":
        return Models(fallback=Polecat())  # plans and reviews, and works beads like `polecat`
    if name == "loop":
        from gastown_mcp.standin.overseer import loop_models

        return loop_models()  # the seed's loop: overseer, mayor, planner, reviewer and polecats
    if name.startswith("error:") and name[6:].isdigit():
        return Fails(int(name[6:]))
    raise ValueError(f"unknown stand-in script {name!r}; choose hello, echo, polecat, planner, loop or error:<status>")
