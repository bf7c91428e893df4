"""Bad input, generated with hypothesis: every call is a clear tool error, the server keeps serving, and the
store is left exactly as it was (beads, deps, labels, comments, events, messages).

One in-process client per test stays open across examples (through an anyio blocking portal), so a crash in
one example would show up as a failure of the next.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult

from gastown_mcp.models import Agent
from gastown_mcp.server import build_server
from gastown_mcp.server.client import result_text
from gastown_mcp.town import Town

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
Call = Callable[[str, dict[str, Any]], CallToolResult]

# Each tool's parameters: (kind, limit) — kind picks the wrong-type values; limit is a max length/size.
PARAMS: dict[str, dict[str, tuple[str, int]]] = {
    "bead_create": {
        "title": ("str", 500),
        "description": ("str", 20000),
        "acceptance": ("str", 20000),
        "type": ("enum", 0),
        "priority": ("priority", 0),
        "labels": ("list_str", 32),
        "parent": ("str", 200),
        "blocked_by": ("list_str", 100),
    },
    "bead_show": {"id": ("str", 200)},
    "bead_list": {"status": ("list_enum", 0), "assignee": ("str", 40), "label": ("str", 64), "limit": ("limit", 0)},
    "bead_ready": {"limit": ("limit", 0)},
    "bead_claim": {"id": ("str", 200)},
    "bead_update": {
        "id": ("str", 200),
        "status": ("enum", 0),
        "reason": ("str", 2000),
        "notes": ("str", 20000),
        "title": ("str", 500),
        "description": ("str", 20000),
        "acceptance": ("str", 20000),
        "priority": ("priority", 0),
        "labels": ("list_str", 32),
    },
    "bead_comment": {"id": ("str", 200), "body": ("str", 20000)},
    "bead_complete": {"id": ("str", 200), "summary": ("str", 20000), "branch": ("str", 300), "commit": ("str", 100)},
    "bead_release": {"id": ("str", 200), "reason": ("str", 2000)},
    "bead_link": {"id": ("str", 200), "other": ("str", 200), "kind": ("enum", 0)},
    "town_agents": {"role": ("enum", 0)},
    "town_nudge": {"to": ("str", 40), "text": ("str", 4000)},
    "town_inbox": {"ack": ("list_int", 100)},
    "town_mail_send": {"to": ("str", 40), "subject": ("str", 200), "body": ("str", 20000), "thread": ("str", 100)},
}
REQUIRED = {
    "bead_create": ["title"],
    "bead_show": ["id"],
    "bead_update": ["id"],
    "bead_comment": ["id", "body"],
    "bead_complete": ["id", "summary"],
    "bead_release": ["id"],
    "bead_link": ["id", "other"],
    "town_nudge": ["to", "text"],
    "town_mail_send": ["to", "subject", "body"],
}

junk_dict = st.dictionaries(st.text(max_size=4), st.integers(), min_size=1, max_size=2)
# The SDK decodes a string argument that is a JSON document ("null", "true") before validating it, as clients
# that send JSON as strings expect: those are not wrong types.
letters = st.text(alphabet=string.ascii_letters, min_size=1, max_size=12).filter(
    lambda s: s not in ("null", "true", "false")
)
fraction = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f))
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "str": st.one_of(
        st.integers(), fraction, st.booleans(), st.lists(st.integers(), min_size=1, max_size=3), junk_dict
    ),
    "priority": st.one_of(letters, fraction, junk_dict, st.integers().filter(lambda i: not 0 <= i <= 4)),
    "limit": st.one_of(letters, fraction, junk_dict, st.integers().filter(lambda i: not 1 <= i <= 500)),
    "enum": st.one_of(letters.map(lambda s: s + "_x"), st.integers(), junk_dict),
    "list_enum": st.one_of(st.integers(), junk_dict, st.lists(letters.map(lambda s: s + "_x"), min_size=1, max_size=3)),
    "list_str": st.one_of(st.integers(), junk_dict, st.lists(st.integers(), min_size=1, max_size=3)),
    "list_int": st.one_of(letters, junk_dict, st.lists(letters, min_size=1, max_size=3)),
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@dataclass
class World:
    """A town with beads in every state, plus clients for a mayor and a polecat."""

    open: str
    waiting: str  # open, blocked by `open`
    done: str
    held: str  # in progress, held by polecat-2
    chain: list[str]  # chain[i+1] waits on chain[i]
    mayor: Call
    polecat: Call
    snapshot: Callable[[], dict[str, Any]]

    def valid_base(self, tool: str) -> dict[str, Any]:
        """Arguments that would be accepted by the schema for `tool`, so one mutation makes them invalid."""
        return {
            "bead_create": {"title": "t"},
            "bead_show": {"id": self.open},
            "bead_update": {"id": self.open, "notes": "n"},
            "bead_comment": {"id": self.open, "body": "b"},
            "bead_complete": {"id": self.held, "summary": "s"},
            "bead_release": {"id": self.held},
            "bead_link": {"id": self.open, "other": self.done, "kind": "related"},
            "town_nudge": {"to": "polecat-1", "text": "x"},
            "town_mail_send": {"to": "polecat-1", "subject": "s", "body": "b"},
        }.get(tool, {})

    def still_serving(self) -> None:
        shown = self.mayor("bead_show", {"id": self.open})
        assert not shown.is_error, result_text(shown)
        assert shown.structured_content["id"] == self.open  # type: ignore[index]


@contextmanager
def calling(town: Town, agent: Agent) -> Iterator[Call]:
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(build_server(town, agent))) as c:
        yield lambda tool, args: portal.call(c.call_tool, tool, args)


@pytest.fixture
def world(town: Town, crew: dict[str, Agent], snapshot: Callable[[], dict[str, Any]]) -> Iterator[World]:
    mayor, p2 = crew["mayor"], crew["polecat-2"]
    first = town.bead_create(mayor, "Open one", labels=["ui"]).id
    waiting = town.bead_create(mayor, "Waits", blocked_by=[first]).id
    done = town.bead_create(mayor, "Done one", priority=0).id
    town.bead_claim(mayor, done)
    town.bead_complete(mayor, done, "finished")
    held = town.bead_create(mayor, "Held one", priority=0).id
    town.bead_claim(p2, held)
    chain = [town.bead_create(mayor, "Chain 0", priority=4).id]
    for i in range(1, 6):
        chain.append(town.bead_create(mayor, f"Chain {i}", priority=4, blocked_by=[chain[-1]]).id)
    with calling(town, mayor) as as_mayor, calling(town, crew["polecat-1"]) as as_polecat:
        yield World(first, waiting, done, held, chain, as_mayor, as_polecat, snapshot)


def assert_clear_error(result: CallToolResult, *needles: str) -> str:
    """A tool error whose text says what was wrong (not a bare 'Error executing tool X')."""
    assert result.is_error, result.structured_content
    text = result_text(result)
    assert "Traceback" not in text
    specific = text.split(":", 1)[1] if text.startswith("Error executing tool") else text
    assert len(specific.strip()) > 10, text
    assert any(n.lower() in text.lower() for n in needles), (needles, text)
    return text


def assert_refused(world: World, call: Call, tool: str, args: dict[str, Any], *needles: str) -> str:
    before = world.snapshot()
    text = assert_clear_error(call(tool, args), *needles)
    assert world.snapshot() == before, (tool, args, text)
    world.still_serving()
    return text


# -- wrong types, out-of-range values, too-long strings --------------------------------------------
tool_param = st.sampled_from([(t, p) for t, ps in PARAMS.items() for p in ps])


@SETTINGS
@given(data=st.data(), target=tool_param)
def test_a_wrong_type_is_a_tool_error_naming_the_parameter(world: World, data: st.DataObject, target: Any) -> None:
    tool, param = target
    kind, _ = PARAMS[tool][param]
    value = data.draw(WRONG[kind], label="value")
    args = {**world.valid_base(tool), param: value}
    assert_refused(world, world.mayor, tool, args, param)


too_long = st.sampled_from([(t, p, n) for t, ps in PARAMS.items() for p, (k, n) in ps.items() if k == "str"])


@SETTINGS
@given(target=too_long, extra=st.integers(1, 5000), char=st.characters(codec="utf-8", exclude_categories=["Cs"]))
def test_a_string_beyond_its_limit_is_refused(world: World, target: Any, extra: int, char: str) -> None:
    tool, param, limit = target
    args = {**world.valid_base(tool), param: char * (limit + extra)}
    text = assert_refused(world, world.mayor, tool, args, param)
    assert str(limit) in text


@SETTINGS
@given(
    target=st.sampled_from([("bead_create", "labels", 32), ("bead_update", "labels", 32), ("town_inbox", "ack", 100)]),
    extra=st.integers(1, 50),
)
def test_a_list_beyond_its_limit_is_refused(world: World, target: Any, extra: int) -> None:
    tool, param, limit = target
    item: Any = 1 if param == "ack" else "l"
    args = {**world.valid_base(tool), param: [item] * (limit + extra)}
    assert_refused(world, world.mayor, tool, args, param)


@SETTINGS
@given(
    label=st.one_of(
        st.text(min_size=65, max_size=80, alphabet=string.ascii_letters),
        st.text(min_size=1, max_size=10).filter(lambda s: not s[0].isalnum() or not s.isascii() or " " in s),
    ),
    tool=st.sampled_from(["bead_create", "bead_update"]),
)
def test_a_malformed_label_is_refused_by_the_town(world: World, label: str, tool: str) -> None:
    args = {**world.valid_base(tool), "labels": ["ok", label]}
    assert_refused(world, world.mayor, tool, args, "label")


@SETTINGS
@given(blank=st.text(alphabet=" \t\n", max_size=5), tool=st.sampled_from(["title", "summary", "body", "text"]))
def test_blank_required_text_is_refused(world: World, blank: str, tool: str) -> None:
    call, name, args = {
        "title": (world.mayor, "bead_create", {"title": blank}),
        "summary": (world.mayor, "bead_complete", {"id": world.held, "summary": blank}),
        "body": (world.mayor, "bead_comment", {"id": world.open, "body": blank}),
        "text": (world.mayor, "town_nudge", {"to": "polecat-1", "text": blank}),
    }[tool]
    assert_refused(world, call, name, args, tool, "needs")


# -- unknown ids and names ---------------------------------------------------------------------------
ID_TOOLS = {
    "bead_show": {},
    "bead_claim": {},
    "bead_update": {"notes": "n"},
    "bead_comment": {"body": "b"},
    "bead_complete": {"summary": "s"},
    "bead_release": {},
    "bead_link:id": {},
    "bead_link:other": {},
}


@SETTINGS
@given(unknown=st.text(min_size=1, max_size=200), where=st.sampled_from(sorted(ID_TOOLS)))
def test_an_unknown_bead_id_is_a_not_found_error(world: World, unknown: str, where: str) -> None:
    tool, _, slot = where.partition(":")
    args: dict[str, Any] = {**ID_TOOLS[where], "id": unknown}
    if tool == "bead_link":
        args = {"id": world.open, "other": world.done, slot: unknown}
    existing = {world.open, world.waiting, world.done, world.held, *world.chain}
    if unknown in existing:
        return
    text = assert_refused(world, world.mayor, tool, args, "no bead", "itself")
    assert repr(unknown)[1:-1][:50] in text or "itself" in text


@SETTINGS
@given(name=st.text(min_size=1, max_size=40), tool=st.sampled_from(["town_nudge", "town_mail_send"]))
def test_an_unknown_agent_is_not_found(world: World, name: str, tool: str) -> None:
    if name in {"mayor", "polecat-1", "polecat-2", "witness", "overseer", "refinery", "deacon", "dog-1", "operator"}:
        return
    args = {**world.valid_base(tool), "to": name}
    assert_refused(world, world.mayor, tool, args, "no agent")


@SETTINGS
@given(name=st.text(min_size=1, max_size=60))
def test_an_unknown_tool_is_refused_as_unknown_naming_the_caller(world: World, name: str) -> None:
    if name in PARAMS or name in ("town_status", "town_heartbeat"):
        return
    text = assert_refused(world, world.polecat, name, {}, "polecat-1")
    assert "unknown tool" in text and "may not call" not in text


# -- random JSON for the arguments -------------------------------------------------------------------
@SETTINGS
@given(tool=st.sampled_from(sorted(REQUIRED)), args=st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_random_json_without_the_required_arguments_is_refused(world: World, tool: str, args: dict[str, Any]) -> None:
    missing = [p for p in REQUIRED[tool] if p not in args]
    if not missing:
        return
    assert_refused(world, world.mayor, tool, args, *missing)


@SETTINGS
@given(
    tool=st.sampled_from(sorted(PARAMS)),
    args=st.dictionaries(
        st.sampled_from(["id", "title", "limit", "to", "status", "kind", "labels", "ack", "role", "priority"]),
        json_values,
        min_size=1,
        max_size=4,
    ),
)
def test_random_json_never_crashes_the_server(world: World, tool: str, args: dict[str, Any]) -> None:
    # Random values may happen to be valid (then the call may change things); they must never crash it.
    result = world.mayor(tool, args)
    if result.is_error:
        assert_clear_error(result, *args, "no ", "not", "need", "nothing", "must", "cycle", "itself", "may")
    world.still_serving()


# -- invalid transitions and cycles ------------------------------------------------------------------
@SETTINGS
@given(case=st.integers(0, 11))
def test_an_invalid_transition_is_refused_saying_why(world: World, case: int) -> None:
    w = world
    call, tool, args, needle = [
        (w.mayor, "bead_complete", {"id": w.open, "summary": "s"}, "claim it first"),
        (w.mayor, "bead_complete", {"id": w.done, "summary": "s"}, "is done"),
        (w.mayor, "bead_release", {"id": w.open}, "nothing to release"),
        (w.mayor, "bead_claim", {"id": w.done}, "not open"),
        (w.mayor, "bead_claim", {"id": w.waiting}, "waits on"),
        (w.mayor, "bead_claim", {"id": w.held}, "claimed by polecat-2"),
        (w.mayor, "bead_update", {"id": w.open, "status": "open"}, "cannot become open"),
        (w.mayor, "bead_update", {"id": w.done, "status": "blocked", "reason": "r"}, "cannot become blocked"),
        (w.mayor, "bead_update", {"id": w.open, "status": "blocked"}, "needs a reason"),
        (w.polecat, "bead_complete", {"id": w.held, "summary": "s"}, "claimed by polecat-2"),
        (w.polecat, "bead_release", {"id": w.held}, "claimed by polecat-2"),
        (w.mayor, "bead_update", {"id": w.open}, "nothing to update"),
    ][case]
    assert_refused(w, call, tool, args, needle)


@SETTINGS
@given(data=st.data())
def test_a_link_that_would_make_a_cycle_is_refused(world: World, data: st.DataObject) -> None:
    chain = world.chain
    later = data.draw(st.integers(0, len(chain) - 1), label="waiter")
    earlier = data.draw(st.integers(later, len(chain) - 1), label="blocker")
    # chain[earlier] already waits on chain[later] (or is it): chain[later] waiting on it closes a loop.
    args = {"id": chain[later], "other": chain[earlier], "kind": "blocks"}
    assert_refused(world, world.mayor, "bead_link", args, "cycle", "itself")
