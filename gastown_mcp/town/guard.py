"""The guard: who may do what (through the roles table beside it) and what input is acceptable.

Every `Town` method checks its caller here before it touches the store, so permissions and validation live
in one place and every surface (MCP, CLI, gateway, supervisors) gets the same answers and the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum
from typing import TypeVar

from gastown_mcp.errors import Forbidden, InvalidInput
from gastown_mcp.models import LABEL_MAX, TEXT_MAX, TITLE_MAX, Agent
from gastown_mcp.town import roles

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
MAX_LABELS = 32
OPERATOR = "operator"

E = TypeVar("E", bound=Enum)


def require(actor: Agent, action: str, what: str) -> None:
    """Raise `Forbidden` unless the actor's role may do `action` (`what` words the refusal)."""
    if not roles.can(actor.role, action):
        raise Forbidden(f"{actor.name} ({actor.role.value}) may not {what}")


def own_only(actor: Agent, action: str, verb: str, bead_id: str) -> bool:
    """True when the caller may act only on beads it holds (the store enforces that atomically)."""
    if roles.can(actor.role, f"{action}.any"):
        return False
    if roles.can(actor.role, f"{action}.own"):
        return True
    raise Forbidden(f"{actor.name} ({actor.role.value}) may not {verb} {bead_id}")


def text(name: str, value: str | None, limit: int = TEXT_MAX) -> str:
    value = value or ""
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value)} characters; the limit is {limit}. Shorten it")
    return value


def title(value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInput("a bead needs a title: one line saying what to do")
    return text("title", value, TITLE_MAX)


def priority(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
        raise InvalidInput(f"priority must be an integer from 0 (highest) to 4 (lowest), not {value!r}")
    return value


def labels(values: Sequence[str]) -> list[str]:
    out = []
    for label in values:
        if not isinstance(label, str) or not LABEL_RE.match(label) or len(label) > LABEL_MAX:
            raise InvalidInput(f"label {label!r} is not allowed: use up to {LABEL_MAX} letters, digits and _.:/-")
        out.append(label)
    if len(out) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} labels per bead")
    return out


def limit(value: int) -> int:
    if not 1 <= value <= 500:
        raise InvalidInput(f"limit must be between 1 and 500, not {value}")
    return value


def choice(enum: type[E], value: str, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(str(e.value) for e in enum)
        raise InvalidInput(f"{what} {value!r} is not one of: {choices}") from None


def agent_name(name: str) -> str:
    if not NAME_RE.match(name) or name == OPERATOR:
        raise InvalidInput(
            f"agent name {name!r} is not allowed: use 1-40 lowercase letters, digits or '-', starting with a letter"
        )
    return name
