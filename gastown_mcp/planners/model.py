"""One forced tool call through the town's gateway: the request, the key refresh, and error translation.

The `anthropic` SDK's errors become the town's here, once: a spent budget (HTTP 402) is `BudgetExceeded`, a
gateway that does not answer says to start the town, anything else names the status and message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic

from gastown_mcp.config import PlannerSection
from gastown_mcp.errors import BudgetExceeded, GastownError


@dataclass(frozen=True)
class ToolAnswer:
    """What the model passed to the tool (None when it answered without calling it), and the usage."""

    input: dict[str, Any] | None
    ref: str
    input_tokens: int
    output_tokens: int


class ToolModel:
    def __init__(self, base_url: str, key: Callable[[bool], str], cfg: PlannerSection, agent: str) -> None:
        self.base_url = base_url
        self.key = key  # key(refresh) -> the agent's gateway key; refresh issues a new one
        self.cfg = cfg
        self.agent = agent

    def call(self, system: str, messages: list[dict[str, Any]], tool: dict[str, Any]) -> ToolAnswer:
        for attempt in (0, 1):
            client = anthropic.Anthropic(
                base_url=self.base_url, api_key=self.key(attempt > 0), max_retries=1, timeout=self.cfg.timeout_seconds
            )
            try:
                msg = client.messages.create(  # type: ignore[call-overload]  # plain dicts: the SDK wants TypedDicts
                    model=self.cfg.model,
                    max_tokens=self.cfg.max_tokens,
                    system=system,
                    messages=messages,
                    tools=[tool],
                    tool_choice={"type": "tool", "name": tool["name"]},
                )
            except anthropic.AuthenticationError:
                if attempt == 0:
                    continue  # another process of this town issued a newer key: take a fresh one, once
                raise GastownError(f"the gateway refused the {self.agent} planner's key twice") from None
            except anthropic.APIStatusError as exc:
                raise self._translate(exc) from None
            except anthropic.APIConnectionError as exc:
                raise GastownError(
                    f"the town's gateway at {self.base_url} did not answer the {self.agent} planner ({exc}); "
                    "is `gastown up` running?"
                ) from None
            finally:
                client.close()
            used = next((b for b in msg.content if b.type == "tool_use" and b.name == tool["name"]), None)
            return ToolAnswer(
                dict(used.input) if used is not None and isinstance(used.input, dict) else None,
                used.id if used is not None else "",
                msg.usage.input_tokens,
                msg.usage.output_tokens,
            )
        raise AssertionError("unreachable")

    def _translate(self, exc: anthropic.APIStatusError) -> GastownError:
        message = _message(exc)
        if exc.status_code == 402:
            return BudgetExceeded(
                f"the {self.agent} planner's budget is spent ({message}); nothing was created. Raise it with "
                f"`gastown budget set agent {self.agent} --tokens N` or the town's budget"
            )
        return GastownError(f"the {self.agent} planner's model request failed ({exc.status_code}): {message}")


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc)
