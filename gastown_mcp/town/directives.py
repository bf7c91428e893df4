"""Directives: the fixed set of things the overseer can ask of the mayor, what each needs, when two are the same
(the dedup key), how a directive reads as the message that carries it, and its tracked state
(issued -> acknowledged -> done | refused). The API that issues and tracks them is `town/goals.py`.
"""

from __future__ import annotations

import json
import sqlite3
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from gastown_mcp.models import StrictModel


class DirectiveKind(StrEnum):
    """The fixed set of things the overseer can ask of the mayor."""

    plan_goal = "plan_goal"
    reprioritise = "reprioritise"
    unblock = "unblock"
    cancel = "cancel"
    set_max_polecats = "set_max_polecats"
    pause_rig = "pause_rig"
    resume_rig = "resume_rig"
    escalate = "escalate"  # ask the human: goes to the operator, not the mayor


class DirectiveState(StrEnum):
    issued = "issued"
    acknowledged = "acknowledged"
    done = "done"
    refused = "refused"


# What each kind needs, and which of its arguments make two directives "the same" (the dedup key).
NEEDS: dict[DirectiveKind, tuple[str, ...]] = {
    DirectiveKind.plan_goal: ("goal",),
    DirectiveKind.reprioritise: ("bead", "priority"),
    DirectiveKind.unblock: ("bead",),
    DirectiveKind.cancel: ("bead",),
    DirectiveKind.set_max_polecats: ("rig", "max_polecats"),
    DirectiveKind.pause_rig: ("rig",),
    DirectiveKind.resume_rig: ("rig",),
    DirectiveKind.escalate: ("about", "question"),
}
KEY_ARGS: dict[DirectiveKind, tuple[str, ...]] = {**NEEDS, DirectiveKind.escalate: ("about",)}


class DirectiveIn(StrictModel):
    """One directive as the overseer (model or person) states it."""

    kind: DirectiveKind
    reason: str = Field(min_length=1, max_length=2000, description="why, in one or two sentences")
    goal: int | None = Field(default=None, ge=1, description="plan_goal: the goal's id")
    rig: str | None = Field(default=None, max_length=64, description="the rig (plan_goal optional; rig kinds)")
    bead: str | None = Field(default=None, max_length=100, description="reprioritise, unblock, cancel: the bead")
    priority: int | None = Field(default=None, ge=0, le=4, description="reprioritise: 0 highest .. 4 lowest")
    max_polecats: int | None = Field(default=None, ge=0, le=1000, description="set_max_polecats: the new limit")
    about: str | None = Field(
        default=None, max_length=200, description="escalate: a short stable key of the problem (e.g. bead:gt-4f2a)"
    )
    question: str | None = Field(default=None, max_length=4000, description="escalate: what the human must decide")

    def args(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"kind", "reason"}).items() if v is not None}

    def key(self) -> str:
        parts = [f"{name}={getattr(self, name)}" for name in KEY_ARGS[self.kind]]
        return ":".join([self.kind.value, *parts])


class Directive(BaseModel):
    id: int
    kind: DirectiveKind
    args: dict[str, Any]
    goal: int | None = None
    key: str
    recipient: str
    state: DirectiveState
    reason: str = ""
    note: str = ""
    attempts: int = 1
    next_at: str | None = None
    created_by: str
    created_at: str
    updated_at: str
    closed_at: str | None = None


def directive_of(row: sqlite3.Row) -> Directive:
    return Directive(
        id=row["id"],
        kind=row["kind"],
        args=json.loads(row["args"] or "{}"),
        goal=row["goal_id"],
        key=row["dedup_key"],
        recipient=row["recipient"],
        state=row["state"],
        reason=row["reason"],
        note=row["note"],
        attempts=row["attempts"],
        next_at=row["next_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        closed_at=row["closed_at"],
    )


PLAN_CALL = "plan_create with "  # followed by its arguments as JSON in a plan_goal directive's message


def message_body(directive: DirectiveIn, args: dict[str, Any], goal_text: str | None, directive_id: int) -> str:
    """The message that carries directive `directive_id`: what to do, why, and how to report back.

    A plan_goal message gives plan_create's exact arguments, `directive` included: that one call takes the
    directive, plans the goal and reports the directive done with the new convoy (one model turn, not three).
    """
    kind, rig, bead, did = directive.kind, args.get("rig"), args.get("bead"), directive_id
    plan = json.dumps({"goal": goal_text or "", **({"rig": rig} if rig else {}), "directive": did}, ensure_ascii=False)
    what = {
        DirectiveKind.plan_goal: (
            f"Plan goal {directive.goal}" + (f" on rig {rig}" if rig else "") + f": call {PLAN_CALL}{plan}. "
            "That call takes this directive, plans the goal and reports the directive done with the new convoy."
        ),
        DirectiveKind.reprioritise: f"Set bead {bead}'s priority to {args.get('priority')} (bead_update).",
        DirectiveKind.unblock: (
            f"Unblock bead {bead}: read why it is blocked (bead_show), fix what you can, then set it open "
            "(bead_update status=open)."
        ),
        DirectiveKind.cancel: f"Cancel bead {bead} (bead_update status=cancelled) and say why in a comment.",
        DirectiveKind.set_max_polecats: (
            f"Rig {rig} should run at most {args.get('max_polecats')} polecats: report done to apply it."
        ),
        DirectiveKind.pause_rig: f"Pause dispatch on rig {rig}: report done to apply it.",
        DirectiveKind.resume_rig: f"Resume dispatch on rig {rig}: report done to apply it.",
        DirectiveKind.escalate: f"The overseer needs a decision from you: {directive.question}",
    }[kind]
    if kind is DirectiveKind.escalate:
        return (
            f"DIRECTIVE #{did} (escalate, about {directive.about}): {what}\nWhy: {directive.reason}\n"
            f"Close it with `gastown directive done {did}` once decided."
        )
    if kind is DirectiveKind.plan_goal:
        report = f"If you cannot, refuse it: directive_update (id {did}, state refused, why in note)."
    else:
        report = (
            f"Acknowledge it with directive_update (id {did}, state acknowledged), carry it out, then "
            "directive_update state done, or refused with why in note."
        )
    return f"DIRECTIVE #{did} ({kind.value}) from the overseer: {what}\nWhy: {directive.reason}\n{report}"
