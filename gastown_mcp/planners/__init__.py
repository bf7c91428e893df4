"""Model-backed judgement: the refinery planner (a goal -> a plan of beads) and the deacon reviewer (a diff ->
a verdict per acceptance criterion). Each calls the town's own gateway with the `anthropic` SDK under its own
agent's virtual key, so its tokens are metered and budgeted like any agent's, and answers only through a tool
with a strict schema. `build_models(gateway_url)` is what the composition root hands to `Town.use_models`.
"""

from __future__ import annotations

from collections.abc import Callable

from gastown_mcp.models import Role
from gastown_mcp.planners.deacon import DeaconReviewer
from gastown_mcp.planners.model import ToolModel
from gastown_mcp.planners.refinery import RefineryPlanner
from gastown_mcp.town.plans import Models, PlansAPI

__all__ = ["DeaconReviewer", "RefineryPlanner", "ToolModel", "build_models"]


def build_models(gateway_url: str) -> Callable[[PlansAPI], Models]:
    """A factory for `Town.use_models`: both models reach the gateway at `gateway_url` (loopback)."""

    def make(town: PlansAPI) -> Models:
        cfg = town.settings.planner
        refinery = ToolModel(gateway_url, lambda refresh: town.model_key(Role.refinery, refresh), cfg, "refinery")
        deacon = ToolModel(gateway_url, lambda refresh: town.model_key(Role.deacon, refresh), cfg, "deacon")
        return Models(planner=RefineryPlanner(refinery), reviewer=DeaconReviewer(deacon))

    return make
