"""The operator's actions on the dashboard, each one call into the town API with the operator's rights (the
town records the event): nudge and stop an agent, release, block and unblock a bead, retry and reject a merge
request, set a budget, read escalation mail, the emergency stop and thaw."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gastown_mcp.errors import InvalidInput
from gastown_mcp.models import Agent
from gastown_mcp.town import Town

Form = Mapping[str, str]


def _need(form: Form, key: str, what: str) -> str:
    value = (form.get(key) or "").strip()
    if not value:
        raise InvalidInput(f"{what} is missing; fill it in and try again")
    return value


def _int(form: Form, key: str, what: str) -> int:
    value = _need(form, key, what)
    if not value.isdigit():
        raise InvalidInput(f"{what} must be a whole number, not {value!r}")
    return int(value)


def _number(form: Form, key: str) -> float | None:
    value = (form.get(key) or "").strip().replace(",", "").lstrip("$")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{key} must be a number, not {value!r}") from None


def nudge(town: Town, op: Agent, f: Form) -> str:
    agent = _need(f, "agent", "the agent")
    town.nudge(op, agent, _need(f, "text", "the nudge's text"))
    return f"nudged {agent}"


def stop(town: Town, op: Agent, f: Form) -> str:
    agent = town.stop(op, _need(f, "agent", "the agent"), f.get("reason") or "stopped from the dashboard")
    return f"{agent.name} is {agent.state.value}"


def release(town: Town, op: Agent, f: Form) -> str:
    bead = town.bead_release(op, _need(f, "bead", "the bead"), f.get("reason") or "released from the dashboard")
    return f"{bead.id} is {bead.status.value}"


def block(town: Town, op: Agent, f: Form) -> str:
    bead = town.block(op, _need(f, "bead", "the bead"), _need(f, "reason", "a reason (what it waits on)"))
    return f"{bead.id} is blocked"


def unblock(town: Town, op: Agent, f: Form) -> str:
    bead_id = _need(f, "bead", "the bead")
    bead = town.bead_update(op, bead_id, status="open", reason=f.get("reason") or "unblocked from the dashboard")
    return f"{bead.id} is {bead.status.value}"


def merge_retry(town: Town, op: Agent, f: Form) -> str:
    request = town.merge_retry(op, _int(f, "request", "the merge request"))
    return f"merge request {request.id} is {request.state.value}"


def merge_reject(town: Town, op: Agent, f: Form) -> str:
    request = town.merge_reject(op, _int(f, "request", "the merge request"), _need(f, "reason", "a reason"))
    return f"merge request {request.id} is {request.state.value}"


def budget(town: Town, op: Agent, f: Form) -> str:
    scope = _need(f, "scope", "the scope (agent, rig or town)")
    name = (f.get("name") or "").strip() or None
    tokens = _number(f, "tokens")
    if tokens is not None and not tokens.is_integer():
        raise InvalidInput("tokens must be a whole number")
    status = town.budget_set(op, scope, name, tokens=None if tokens is None else int(tokens), usd=_number(f, "usd"))
    return f"budget {status.scope.value} {status.name} set"


def acknowledge(town: Town, op: Agent, f: Form) -> str:
    done = town.acknowledge(op, [_int(f, "message", "the message")])
    return "marked read" if done else "nothing to mark (it is not the operator's mail)"


def estop(town: Town, op: Agent, f: Form) -> str:
    town.estop(op, f.get("reason") or "emergency stop from the dashboard")
    return "emergency stop: agents frozen, model calls refused, dispatch stopped"


def thaw(town: Town, op: Agent, f: Form) -> str:
    lifted = town.thaw(op, f.get("reason") or "thawed from the dashboard")
    return "thawed: agents resume" if lifted else "the town was not stopped"


ACTIONS: dict[str, Callable[[Town, Agent, Form], str]] = {
    "nudge": nudge,
    "stop": stop,
    "release": release,
    "block": block,
    "unblock": unblock,
    "merge-retry": merge_retry,
    "merge-reject": merge_reject,
    "budget": budget,
    "ack": acknowledge,
    "estop": estop,
    "thaw": thaw,
}
