"""Who may do what: the permission table by role, and which MCP tools each role sees.

Actions ending in `.own` apply only to beads the caller holds; `.any` to every bead. The tool profile of a
role is derived from this table, so a role never sees a tool it may not call.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the table is keyed by the roles' values, so the CLI's quick path reads it without the models
    from gastown_mcp.models import Role

READ = {"bead.read"}
POLECAT = READ | {
    "bead.claim",
    "bead.update.own",
    "bead.comment",
    "bead.complete.own",
    "bead.release.own",
    "bead.create.discovered",
    "town.inbox",
    "town.mail",
    "town.heartbeat",
}
WITNESS = READ | {
    "town.status",
    "bead.release.any",
    "town.nudge",
    "town.agents",
    "town.inbox",
    "town.heartbeat",
    "town.mail",
}
PLANNER = READ | {
    "town.status",
    "bead.create",
    "bead.claim",
    "bead.claim.any",  # without it (polecats): one bead at a time, its hook, never another agent's hook
    "bead.update.any",
    "bead.comment",
    "bead.complete.any",
    "bead.release.any",
    "bead.link",
    "town.nudge",
    "town.mail",
    "town.inbox",
    "town.agents",
    "town.heartbeat",
}
MERGES = {"merge.read", "merge.admin"}
MAYOR = (
    PLANNER
    | MERGES
    | {
        "town.spawn",
        "town.stop",
        "town.sling",
        "town.budget.set",
        "town.budget",
        "town.usage",
        "plan.create",
        "goal.read",
        "directive.read",  # the directives addressed to it
        "directive.handle",  # acknowledge, complete or refuse them
    }
)
# Only the overseer (the operator, or its model loop) states goals and gives the mayor directives.
OVERSEER = MAYOR | {"town.admin", "goal.manage", "directive.issue"}
DOG = READ | {"town.status", "town.agents", "town.heartbeat", "town.inbox", "town.mail"}

ACTIONS: dict[str, frozenset[str]] = {
    "overseer": frozenset(OVERSEER),
    "mayor": frozenset(MAYOR),
    # The refinery runs the merge queue; a bead it hands back goes to a fresh polecat (town.sling).
    # It also turns goals into checked plans of beads (plan.create).
    "refinery": frozenset(PLANNER | MERGES | {"town.budget", "town.usage", "town.sling", "plan.create"}),
    "deacon": frozenset(PLANNER | {"merge.read", "town.budget", "town.usage"}),
    # town.sling: the witness respawns a polecat for a bead whose polecat died.
    "witness": frozenset(WITNESS | {"town.stop", "town.sling", "town.budget", "town.usage"}),
    "polecat": frozenset(POLECAT),
    "dog": frozenset(DOG),
}

# Each MCP tool and the actions that let a role see it (any one suffices).
TOOL_ACTIONS: dict[str, tuple[str, ...]] = {
    "bead_create": ("bead.create", "bead.create.discovered"),
    "bead_show": ("bead.read",),
    "bead_list": ("bead.read",),
    "bead_ready": ("bead.read",),
    "bead_claim": ("bead.claim",),
    "bead_update": ("bead.update.own", "bead.update.any"),
    "bead_comment": ("bead.comment",),
    "bead_complete": ("bead.complete.own", "bead.complete.any"),
    "bead_release": ("bead.release.own", "bead.release.any"),
    "bead_link": ("bead.link",),
    "town_status": ("town.status",),
    "town_agents": ("town.agents",),
    "town_nudge": ("town.nudge",),
    "town_inbox": ("town.inbox",),
    "town_mail_send": ("town.mail",),
    "town_heartbeat": ("town.heartbeat",),
    "town_spawn": ("town.spawn",),
    "town_stop": ("town.stop",),
    "town_sling": ("town.sling",),
    "town_budget_set": ("town.budget.set",),
    "town_budget": ("town.budget",),
    "town_usage": ("town.usage",),
    "merge_list": ("merge.read",),
    "merge_show": ("merge.read",),
    "merge_retry": ("merge.admin",),
    "merge_reject": ("merge.admin",),
    "plan_create": ("plan.create",),
    "convoy_show": ("plan.create",),
    "goal_add": ("goal.manage",),
    "goal_list": ("goal.read",),
    "goal_update": ("goal.manage",),
    "directive_issue": ("directive.issue",),
    "directive_list": ("directive.read",),
    "directive_update": ("directive.handle",),
}


def can(role: Role | str, action: str) -> bool:
    return action in ACTIONS[role]


def tools_for(role: Role) -> list[str]:
    allowed = ACTIONS[role]
    return [tool for tool, actions in TOOL_ACTIONS.items() if any(a in allowed for a in actions)]


@functools.cache
def tool_set(role: Role) -> frozenset[str]:
    """`tools_for(role)` as a set, made once per role (these tables are fixed for the process): what a call's
    role check looks a tool up in."""
    return frozenset(tools_for(role))


# Each MCP resource (URI or template) and the actions that let a role see and read it.
RESOURCE_ACTIONS: dict[str, tuple[str, ...]] = {
    "bead://{id}": ("bead.read",),
    "town://status": ("town.status",),
}


def resources_for(role: Role) -> list[str]:
    allowed = ACTIONS[role]
    return [uri for uri, actions in RESOURCE_ACTIONS.items() if any(a in allowed for a in actions)]


def prompts_for(role: Role) -> list[str]:
    """A role reads the rules of its own role; the overseer (town.admin) reads every role's."""
    from gastown_mcp.models import Role

    return [r.value for r in Role] if can(role, "town.admin") else [role.value]
