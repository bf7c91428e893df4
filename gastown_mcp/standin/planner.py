"""Stand-in scripts for the planners: the refinery's `submit_plan` and the deacon's `submit_verdict`.

Deterministic, chosen by what the request says: a tag in the goal picks a plan variant ([cycle],
[missing-criterion], [unknown-dep], [huge], [repair]: one error first, fixed once the problems come back as a
tool error); the reviewer passes every criterion unless the bead's text holds [review:fail]. `Models` sends
each request to the script for the tool it offers, and everything else to a fallback script.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from gastown_mcp.standin.conversation import Conversation, Text, ToolCall, Turn

SIX = [
    ("scaffold", "Create the package skeleton", [], "src/pkg/__init__.py", 2),
    ("fixtures", "Add test fixtures", [], "tests/conftest.py", 2),
    ("model", "Add the data model", ["scaffold"], "src/pkg/model.py", 4),
    ("api", "Expose the model through the API", ["model"], "src/pkg/api.py", 5),
    ("cli", "Add the command line", ["api", "fixtures"], "src/pkg/cli.py", 3),
    ("docs", "Document the command line", ["cli"], "README.md", 1),
]


def six_bead_plan(goal: str) -> dict[str, Any]:
    """A valid plan of six beads: two roots (scaffold, fixtures) and a chain of dependants."""
    return {
        "title": f"Plan: {goal[:120]}",
        "summary": "Six steps from an empty package to a documented command line.",
        "items": [
            {
                "key": key,
                "title": title,
                "description": f"{title} for: {goal[:200]}",
                "type": "task",
                "priority": 2,
                "depends_on": deps,
                "files": [path],
                "complexity": size,
                "acceptance": [{"text": f"{path} exists", "verify": f"test -f {path}"}],
            }
            for key, title, deps, path, size in SIX
        ],
    }


def plan_variant(goal: str, repairing: bool) -> dict[str, Any]:
    plan = six_bead_plan(re.sub(r"\[[a-z:-]+\]\s*", "", goal).strip() or goal)
    items = plan["items"]
    if "[cycle]" in goal:
        items[0]["depends_on"] = ["docs"]  # scaffold -> docs -> cli -> api -> model -> scaffold
    elif "[missing-criterion]" in goal:
        items[3]["acceptance"] = []
    elif "[unknown-dep]" in goal or ("[repair]" in goal and not repairing):
        items[4]["depends_on"] = ["api", "database"]
    elif "[huge]" in goal:
        extra = copy.deepcopy(items[-1])
        for n in range(60):
            items.append({**extra, "key": f"extra-{n}", "title": f"Extra step {n}", "depends_on": []})
    return plan


@dataclass
class PlannerScript:
    name: str = "planner"

    def next_turn(self, conversation: Conversation) -> Turn:
        goal = conversation.user_texts()[0] if conversation.user_texts() else ""
        goal = goal.removeprefix("Goal: ").split("\n", 1)[0]
        plan = plan_variant(goal, repairing=bool(conversation.last_tool_results()))
        return Turn([ToolCall("submit_plan", plan)])


@dataclass
class ReviewerScript:
    name: str = "reviewer"

    def next_turn(self, conversation: Conversation) -> Turn:
        text = conversation.last_user_text
        fail = "[review:fail]" in text
        numbers = [int(n) for n in re.findall(r"^Criterion (\d+):", text, re.M)] or [1]
        verdicts = [
            {"criterion": n, "passed": not fail, "reason": "the bead asks for a failing review" if fail else "met"}
            for n in numbers
        ]
        return Turn([ToolCall("submit_verdict", {"verdicts": verdicts, "summary": "scripted review"})])


@dataclass
class Models:
    """Routes a request by the tool it offers: submit_plan, submit_verdict, else `fallback`."""

    fallback: Any = None
    planner: PlannerScript = field(default_factory=PlannerScript)
    reviewer: ReviewerScript = field(default_factory=ReviewerScript)
    name: str = "models"

    def next_turn(self, conversation: Conversation) -> Turn:
        tools = conversation.tools
        if "submit_plan" in tools:
            return self.planner.next_turn(conversation)
        if "submit_verdict" in tools:
            return self.reviewer.next_turn(conversation)
        if self.fallback is not None:
            turn: Turn = self.fallback.next_turn(conversation)
            return turn
        return Turn([Text("The scripted stand-in plans and reviews; it has nothing else to say.")])
