"""The deacon reviewer: a bead's diff judged against its acceptance criteria, one verdict per criterion.

It is asked only about work whose verify commands already passed, so its verdict can send a bead back but
never land one. The model answers only by calling `submit_verdict` (the town's `Verdict` schema).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from gastown_mcp.errors import GastownError
from gastown_mcp.models import Bead
from gastown_mcp.planners.model import ToolModel
from gastown_mcp.town.plans import Criterion, Verdict

SYSTEM = """You are the deacon of Gas Town: you check finished work against what was asked before it lands. \
You get a bead (a task), its numbered acceptance criteria (their verify commands already passed), and the \
diff of the work. For each criterion, judge whether the diff really meets it (not only its verify command): \
passed true or false, with a short reason. Answer only by calling submit_verdict once."""


class DeaconReviewer:
    def __init__(self, model: ToolModel) -> None:
        self.model = model
        self.tool = {
            "name": "submit_verdict",
            "description": "Submit one verdict per acceptance criterion, and a one-line summary.",
            "input_schema": Verdict.model_json_schema(),
        }

    def review(self, bead: Bead, criteria: Sequence[Criterion], diff: str) -> Verdict:
        listed = "\n".join(f"Criterion {n}: {c.text}\n  verify: {c.verify}" for n, c in enumerate(criteria, 1))
        prompt = (
            f"Bead {bead.id}: {bead.title}\n\n{bead.description}\n\nAcceptance criteria:\n{listed}\n\n"
            f"Diff:\n```diff\n{diff}\n```"
        )
        answer = self.model.call(SYSTEM, [{"role": "user", "content": prompt}], self.tool)
        try:
            return Verdict.model_validate(answer.input)
        except ValidationError as exc:
            raise GastownError(f"the deacon's review of {bead.id} gave no valid verdict: {exc}") from None
