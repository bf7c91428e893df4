"""The guard: who may do what (through the roles table beside it) and what input is acceptable.

Every `Town` method checks its caller here before it touches the store, so permissions and validation live
in one place and every surface (MCP, CLI, gateway, supervisors) gets the same answers and the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum
from typing import TypeVar

from gastown_mcp.config import LimitsSection
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


# -- a polecat's share of the queue ([limits]) -----------------------------------------------------------
def own_claim(actor: Agent, bead_id: str | None, held: Sequence[str], max_held: int) -> str | None:
    """The bead a polecat may claim: only its hook once it has one, and nothing new while it holds
    `max_held` beads. None means "the top ready bead" (the caller skips beads on other agents' hooks)."""
    hook = actor.metadata.get("hook")
    if hook and bead_id not in (None, hook):
        raise Forbidden(
            f"{actor.name} works only {hook}, the bead on its hook; finish it with bead_complete or give it back "
            "with bead_release (then stop: the town starts a fresh polecat for other work)"
        )
    target = str(hook) if hook else bead_id
    if target in held:
        return target  # renewing what it holds
    if len(held) >= max_held:
        raise Forbidden(
            f"{actor.name} already holds {', '.join(held)}; a polecat works {max_held} bead(s) at a time: "
            "finish it with bead_complete or give it back with bead_release first"
        )
    return target


def not_hooked_elsewhere(actor: Agent, bead_id: str, hooked_by: set[str]) -> None:
    """A bead slung to (or reserved for) other agents is theirs; a polecat may not take it."""
    if hooked_by and actor.name not in hooked_by:
        raise Forbidden(f"bead {bead_id} is on {min(hooked_by)}'s hook (slung to it); pick another with bead_ready")


def side_work(
    actor: Agent,
    title: str,
    description: str,
    acceptance: str,
    priority: int,
    *,
    floor: int,
    made_last_hour: int,
    limits: LimitsSection,
) -> None:
    """A polecat's new bead: at most `polecat_creates_per_hour`, no more urgent than its own bead (`floor`),
    and at most `polecat_bead_chars` of text."""
    size = len(title or "") + len(description or "") + len(acceptance or "")
    if size > limits.polecat_bead_chars:
        raise InvalidInput(
            f"side work of {size} characters is over the limit of {limits.polecat_bead_chars} ([limits] "
            "polecat_bead_chars); give a short title and description and put details in a comment"
        )
    if priority < floor:
        raise InvalidInput(
            f"side work from {actor.name} may not outrank its own bead: use priority {floor} or lower "
            f"(a larger number), not {priority}; mail the mayor with town_mail_send if it is urgent"
        )
    if made_last_hour >= limits.polecat_creates_per_hour:
        raise Forbidden(
            f"{actor.name} created {made_last_hour} beads in the last hour ([limits] polecat_creates_per_hour); "
            "note further side work in your bead's notes, or mail the mayor with town_mail_send"
        )
