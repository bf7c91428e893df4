"""Stand-in scripts for the seed's loop: the overseer (`issue_directives`), the mayor (under a real Claude Code,
working its directives through the town's tools) and a planner for the demo's sample rig. Not models.

- Overseer: reads the JSON summary in its prompt; plans each active goal with no convoy and no open directive,
  asks the human about a goal whose work spent its budget, and directs an unblock of each blocked bead.
- Mayor: takes the directive its prompt or the last tool result names (a nudge): a plan_goal message gives
  plan_create's arguments with the directive, one call that takes, plans and reports it. Otherwise (or in a
  fresh session, after listing its issued directives and taking the oldest) it acknowledges the directive,
  carries it out (plan_goal -> plan_create on the goal's text and rig; unblock / cancel / reprioritise ->
  bead_update) and reports it done (with the convoy for a plan); then it ends its turn unless a new directive
  rode in on that result. Stateless like the
  polecat script: the step rides in each tool_use id, the rest is read back from the conversation.
- `Loop` routes each request by the tools it offers: submit_plan -> the sample-rig plan, submit_verdict -> the
  reviewer, issue_directives -> overseer, the mayor's directive tools -> mayor, anything else -> polecat.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from gastown_mcp.standin.conversation import Conversation, Text, ToolCall, Turn
from gastown_mcp.standin.planner import Models, PlannerScript
from gastown_mcp.standin.polecat import TOOL_PREFIX, Polecat, _result_of, _step
from gastown_mcp.town.directives import PLAN_CALL

SUMMARY_MARK = "Town summary (JSON):"
OVERSEER_TOOL = "issue_directives"
MAYOR_TOOL = TOOL_PREFIX + "directive_update"
NUDGED = re.compile(r"NUDGE from \S+ \(#\d+\): DIRECTIVE #(\d+)")


@dataclass
class OverseerScript:
    name: str = "overseer"

    def next_turn(self, conversation: Conversation) -> Turn:
        text = conversation.last_user_text
        summary: dict[str, Any] = {}
        if SUMMARY_MARK in text:
            try:
                summary = json.loads(text.split(SUMMARY_MARK, 1)[1].strip())
            except ValueError:
                summary = {}
        directives: list[dict[str, Any]] = []
        for goal in summary.get("goals", []):
            if not goal.get("convoys") and not goal.get("open_directives"):
                directives.append(
                    {
                        "kind": "plan_goal",
                        "goal": goal["id"],
                        **({"rig": goal["rig"]} if goal.get("rig") else {}),
                        "reason": f"goal {goal['id']} is active and has no plan yet",
                    }
                )
        for goal in summary.get("goals", []):
            budget, spent = goal.get("budget_usd"), goal.get("spent_usd", 0.0)
            if budget and spent >= budget:
                directives.append(
                    {
                        "kind": "escalate",
                        "about": f"goal:{goal['id']}:budget",
                        "question": f"Goal {goal['id']} spent ${spent:.4f} of ${budget:.4f}: raise or abandon it?",
                        "reason": f"goal {goal['id']} is over its budget",
                    }
                )
        for bead in summary.get("blocked", []):
            directives.append(
                {
                    "kind": "unblock",
                    "bead": bead["id"],
                    "reason": f"{bead['id']} is blocked after {bead.get('failures', 0)} failures and holds up work",
                }
            )
        said = f"{len(directives)} directive(s) for the mayor" if directives else "nothing needs a directive"
        return Turn([ToolCall(OVERSEER_TOOL, {"directives": directives, "summary": f"scripted overseer: {said}"})])


@dataclass
class MayorScript:
    name: str = "mayor"

    def next_turn(self, conversation: Conversation) -> Turn:
        calls = conversation.last_tool_uses()
        results = conversation.last_tool_results()
        step = _step(calls[-1].id) if calls else None
        if step is not None and any(r.is_error for r in results):
            failed = next(r for r in results if r.is_error)
            return Turn([Text(f"Stopping: {calls[-1].name} failed: {failed.text[:500]}")])
        if step in (None, "done"):
            # A directive in the prompt (a resumed session) or riding in on the last result (a nudge) says
            # which one to take: no need to list them first.
            said = [_last_prompt(conversation)] if step is None else [r.text for r in results]
            nudged = [int(m.group(1)) for text in said for m in NUDGED.finditer(text)]
            if nudged:
                plan = _plan_arguments(said, nudged[0])
                if plan is not None:  # plan_create's exact arguments, the directive included: one call does it
                    return self._call("done", "plan_create", plan)
                return self._call("ack", "directive_update", {"id": nudged[0], "state": "acknowledged"})
            if step == "done":
                return Turn([Text("Directive carried out; nothing else is waiting for me.")])
            return self._call("list", "directive_list", {"state": "issued"})  # a fresh session: look
        if step == "list":
            directive = _first_directive(_result_of(conversation, "list"))
        else:  # what it acknowledged: the directive itself, with its kind and arguments
            directive = _directive(_result_of(conversation, "ack"))
        if directive is None:
            return Turn([Text("No directive is waiting for me; the scheduler works the ready beads.")])
        did, args = directive["id"], directive.get("args") or {}
        if step == "list":
            return self._call("ack", "directive_update", {"id": did, "state": "acknowledged"})
        if step == "ack":
            kind, bead = directive["kind"], args.get("bead")
            if kind == "plan_goal":
                goal = str(args.get("text") or f"goal {args.get('goal')}")
                return self._call(
                    "plan", "plan_create", {"goal": goal, **({"rig": args["rig"]} if "rig" in args else {})}
                )
            if kind in ("unblock", "cancel") and bead:
                status = "open" if kind == "unblock" else "cancelled"
                reason = f"directive #{did} from the overseer"
                return self._call("act", "bead_update", {"id": bead, "status": status, "reason": reason})
            if kind == "reprioritise" and bead:
                return self._call("act", "bead_update", {"id": bead, "priority": args.get("priority", 2)})
            return self._call("done", "directive_update", {"id": did, "state": "done", "note": "applied"})
        if step == "plan":
            convoy = _convoy_id(_result_of(conversation, "plan"))
            note = f"planned as convoy {convoy}" if convoy else "planned"
            return self._call(
                "done",
                "directive_update",
                {"id": did, "state": "done", "note": note, **({"convoy": convoy} if convoy else {})},
            )
        return self._call("done", "directive_update", {"id": did, "state": "done", "note": f"{directive['kind']} done"})

    def _call(self, step: str, tool: str, args: dict[str, Any]) -> Turn:
        return Turn([Text(f"Next: {step}."), self._tool(step, tool, args)])

    def _tool(self, step: str, tool: str, args: dict[str, Any]) -> ToolCall:
        return ToolCall(name=TOOL_PREFIX + tool, input=args, id=f"toolu_standin_{step}_{secrets.token_hex(8)}")


def _plan_arguments(texts: list[str], directive_id: int) -> dict[str, Any] | None:
    """plan_create's arguments as a plan_goal directive's message gives them (None for other directives)."""
    for text in texts:
        at = text.find(f"DIRECTIVE #{directive_id} (plan_goal)")
        start = text.find(PLAN_CALL, at) if at >= 0 else -1
        if start < 0:
            continue
        try:
            found, _ = json.JSONDecoder().raw_decode(text, start + len(PLAN_CALL))
        except ValueError:
            return None
        return found if isinstance(found, dict) and found.get("goal") else None
    return None


def _first_directive(listed: str) -> dict[str, Any] | None:
    try:
        data = json.loads(listed)
    except ValueError:
        return None
    found = data.get("directives") if isinstance(data, dict) else None
    return found[-1] if isinstance(found, list) and found else None  # oldest first: the list is newest first


def _last_prompt(conversation: Conversation) -> str:
    """Every text block of the latest user message (Claude Code adds its own blocks beside the prompt)."""
    for m in reversed(conversation.messages):
        if m.get("role") == "user":
            content = m.get("content", "")
            if isinstance(content, str):
                return content
            return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _directive(result: str) -> dict[str, Any] | None:
    try:
        data = json.loads(result)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "id" in data and "kind" in data else None


def _convoy_id(result: str) -> str | None:
    try:
        data = json.loads(result)
    except ValueError:
        m = re.search(r'"convoy"\s*:\s*\{\s*"id"\s*:\s*"([^"]+)"', result)
        return m.group(1) if m else None
    convoy = data.get("convoy") if isinstance(data, dict) else None
    return str(convoy["id"]) if isinstance(convoy, dict) and convoy.get("id") else None


# The demo's sample rig (README.md, greet.py, test_greet.py, NOTES.md): each bead names the file it appends a
# line to (`file:`, which the polecat script reads; a real model reads the sentence) and verifies that line.
SAMPLE = [
    ("guide", "Add a CONTRIBUTING guide", [], "CONTRIBUTING.md"),
    ("usage", "Add usage notes for greet()", [], "USAGE.md"),
    ("changelog", "Add a CHANGELOG entry for the guide", ["guide"], "CHANGELOG.md"),
    ("notes", "Note in NOTES.md where the guide and usage live", ["guide", "usage"], "NOTES.md"),
]


def sample_plan(goal: str) -> dict[str, Any]:
    return {
        "title": f"Plan: {goal[:120]}",
        "summary": "Document the sample project: a guide, usage notes, a changelog entry and a note.",
        "items": [
            {
                "key": key,
                "title": title,
                "description": f"{title}: append one line naming this bead to {path}.\nfile: {path}",
                "depends_on": deps,
                "files": [path],
                "complexity": 1,
                "acceptance": [{"text": f"{path} names the work", "verify": f"grep -qF {json.dumps(title)} {path}"}],
            }
            for key, title, deps, path in SAMPLE
        ],
    }


@dataclass
class SamplePlanner(PlannerScript):
    name: str = "sample-planner"

    def next_turn(self, conversation: Conversation) -> Turn:
        goal = conversation.user_texts()[0] if conversation.user_texts() else ""
        return Turn([ToolCall("submit_plan", sample_plan(goal.removeprefix("Goal: ").split("\n", 1)[0]))])


@dataclass
class ByRole:
    """The conversation's tools say who is asking: the overseer, the mayor, or a polecat."""

    overseer: OverseerScript = field(default_factory=OverseerScript)
    mayor: MayorScript = field(default_factory=MayorScript)
    polecat: Polecat = field(default_factory=Polecat)
    name: str = "by-role"

    def next_turn(self, conversation: Conversation) -> Turn:
        tools = conversation.tools
        if OVERSEER_TOOL in tools:
            return self.overseer.next_turn(conversation)
        if MAYOR_TOOL in tools:
            return self.mayor.next_turn(conversation)
        return self.polecat.next_turn(conversation)


def loop_models() -> Models:
    """Every model of the seed's loop, for the sample rig: overseer, mayor, refinery, deacon, polecats."""
    return Models(fallback=ByRole(), planner=SamplePlanner())
