"""The refinery planner: a goal -> a plan of beads with dependencies and machine-checked acceptance.

The model answers only by calling `submit_plan`, whose input schema is the town's `Plan`; the town checks the
plan and, when it is refused, sends the problems back as the tool's error result for one repair round.
"""

from __future__ import annotations

from typing import Any

from gastown_mcp.planners.model import ToolModel
from gastown_mcp.town.plans import Draft, plan_schema

SYSTEM = """You are the refinery of Gas Town: you turn a goal into a plan of small beads (tasks) that \
coding agents work one each, in their own git branch of the rig's repository.

Rules for the plan:
- Each item is one coherent change a single agent can finish: complexity 1-10, prefer 2-5.
- depends_on names the keys of items whose work must be on main first; no cycles.
- files lists the files or directories the item may touch.
- Each item has at least one acceptance criterion. Each criterion states what must hold and gives a `verify` \
shell command that exits 0 exactly when it holds: a test (`python3 -m pytest -q tests/test_x.py::test_y`), a \
`grep -q`, a build. It runs at the repository root in a container with no network, after the change is \
applied. Never write a verify command that always passes.
- Titles are unique and imperative. Keep the plan as small as the goal allows.

Answer only by calling submit_plan once."""


class RefineryPlanner:
    def __init__(self, model: ToolModel) -> None:
        self.model = model
        self.tool = {
            "name": "submit_plan",
            "description": "Submit the plan: the convoy's title and summary, and its items.",
            "input_schema": plan_schema(),
        }

    def draft(self, goal: str, rig: str | None, repair: tuple[Draft, list[str]] | None = None) -> Draft:
        first = f"Goal: {goal}\nRig: {rig or '(none named)'}\n\nPlan it and call submit_plan."
        messages: list[dict[str, Any]] = [{"role": "user", "content": first}]
        if repair is not None:
            previous, problems = repair
            ref = previous.ref or "toolu_previous"
            messages += [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": ref, "name": "submit_plan", "input": previous.plan or {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": ref,
                            "is_error": True,
                            "content": "The plan was refused:\n"
                            + "\n".join(f"- {p}" for p in problems)
                            + "\nFix every problem and call submit_plan again with the whole plan.",
                        }
                    ],
                },
            ]
        answer = self.model.call(SYSTEM, messages, self.tool)
        return Draft(answer.input, answer.input_tokens, answer.output_tokens, answer.ref)
