"""The overseer's model: a compact town summary and what changed -> directives for the mayor.

It answers only by calling `issue_directives`, whose input schema holds directives of the fixed kinds (see
`town.goals.DirectiveIn`), each with its reason. The deterministic loop around it (`supervisor/overseer.py`)
decides when to ask, deduplicates, backs off and escalates; this module only asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from gastown_mcp.config import PlannerSection
from gastown_mcp.errors import GastownError
from gastown_mcp.models import Role, StrictModel
from gastown_mcp.planners.model import ToolModel
from gastown_mcp.town import Town
from gastown_mcp.town.directives import DirectiveIn

TOOL = "issue_directives"
SUMMARY_MARK = "Town summary (JSON):"
SYSTEM = """You are the overseer of Gas Town, a factory of AI coding agents. You do not plan beads or write \
code: you direct the mayor, who does. You see a compact summary of the town and the events that woke you.

Directives you may give (each with a short reason):
- plan_goal (goal, rig): an active goal with no convoy and no open directive needs a plan.
- reprioritise (bead, priority 0-4), unblock (bead), cancel (bead): for beads that block progress.
- set_max_polecats (rig, max_polecats), pause_rig (rig), resume_rig (rig): for spend or load.
- escalate (about, question): only what a human must decide.
Give no directive that is already open, and none when nothing needs one. Answer only by calling \
issue_directives once."""


class Decision(StrictModel):
    directives: list[DirectiveIn] = Field(default_factory=list, max_length=8)
    summary: str = Field(default="", max_length=2000, description="one or two sentences: what you decided and why")


@dataclass(frozen=True)
class Answer:
    """The directives the model chose, its one-line summary, and what the request cost."""

    directives: list[DirectiveIn] = field(default_factory=list)
    summary: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


class OverseerModel:
    def __init__(self, model: ToolModel) -> None:
        self.model = model
        self.tool = {
            "name": TOOL,
            "description": "Issue zero or more directives to the mayor, each with its reason.",
            "input_schema": Decision.model_json_schema(),
        }

    def decide(self, summary: dict[str, Any], triggers: list[str]) -> Answer:
        prompt = (
            "What woke you:\n"
            + "\n".join(f"- {t}" for t in triggers)
            + f"\n\n{SUMMARY_MARK}\n{json.dumps(summary, separators=(',', ':'))}"
        )
        answer = self.model.call(SYSTEM, [{"role": "user", "content": prompt}], self.tool)
        try:
            decision = Decision.model_validate(answer.input or {})
        except ValidationError as exc:
            raise GastownError(f"the overseer's model gave no valid directives: {exc}") from None
        return Answer(decision.directives, decision.summary, answer.input_tokens, answer.output_tokens)


def build_overseer(town: Town, gateway_url: str) -> OverseerModel:
    """The overseer's model through the town's gateway at `gateway_url`, under the overseer's own key."""
    cfg = town.settings.overseer
    section = PlannerSection(model=cfg.model, max_tokens=cfg.max_tokens, timeout_seconds=cfg.timeout_seconds)
    return OverseerModel(
        ToolModel(gateway_url, lambda refresh: town.model_key(Role.overseer, refresh), section, "overseer")
    )
