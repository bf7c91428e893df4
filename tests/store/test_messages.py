"""Mail and nudges: sent → delivered (by reading the inbox or riding on a tool result) → acknowledged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gastown_mcp.errors import InvalidInput, NotFound
from gastown_mcp.models import Agent, MessageKind, MessageState, Verb
from gastown_mcp.store import Store
from gastown_mcp.town import Town


def verbs(store: Store, after_id: int = 0) -> list[str]:
    return [e.verb for e in store.events.since(after_id=after_id)]


def test_sent_mail_waits_in_the_inbox_until_read(store: Store) -> None:
    sent = store.messages.send("mayor", "polecat-1", MessageKind.mail, "look at gt-1", subject="hi", thread="t1")
    assert (sent.state, sent.delivered_at, sent.subject, sent.thread) == ("sent", None, "hi", "t1")
    mark = store.events.last_id()
    (read,) = store.messages.inbox("polecat-1")
    assert read.id == sent.id and read.state is MessageState.delivered and read.delivered_at is not None
    assert verbs(store, mark) == [Verb.message_delivered]
    mark = store.events.last_id()
    assert store.messages.inbox("polecat-1")[0].state is MessageState.delivered
    assert verbs(store, mark) == [], "reading delivered mail again is not a new delivery"


def test_an_inbox_holds_only_its_owners_messages_newest_first(store: Store) -> None:
    first = store.messages.send("mayor", "polecat-1", MessageKind.mail, "one")
    store.messages.send("mayor", "polecat-2", MessageKind.mail, "not yours")
    second = store.messages.send("witness", "polecat-1", MessageKind.nudge, "two")
    assert [m.id for m in store.messages.inbox("polecat-1")] == [second.id, first.id]
    assert [m.id for m in store.messages.inbox("polecat-1", limit=1)] == [second.id]
    assert store.messages.inbox("nobody") == []


def test_acknowledged_messages_leave_the_unread_inbox(store: Store) -> None:
    a = store.messages.send("mayor", "polecat-1", MessageKind.mail, "a")
    b = store.messages.send("mayor", "polecat-1", MessageKind.mail, "b")
    assert store.messages.acknowledge("polecat-1", [a.id]) == 1
    got = store.messages.get(a.id)
    assert got.state is MessageState.acknowledged and got.acknowledged_at is not None and got.delivered_at is not None
    assert [m.id for m in store.messages.inbox("polecat-1", unread_only=True)] == [b.id]
    assert {m.id for m in store.messages.inbox("polecat-1")} == {a.id, b.id}


def test_acknowledging_twice_or_someone_elses_message_changes_and_records_nothing(store: Store) -> None:
    mine = store.messages.send("mayor", "polecat-1", MessageKind.mail, "mine")
    theirs = store.messages.send("mayor", "polecat-2", MessageKind.mail, "theirs")
    store.messages.acknowledge("polecat-1", [mine.id])
    mark = store.events.last_id()
    assert store.messages.acknowledge("polecat-1", [mine.id, theirs.id, 9999]) == 0
    assert store.messages.get(theirs.id).state is MessageState.sent
    assert verbs(store, mark) == []
    assert store.messages.acknowledge("polecat-1", []) == 0


def test_nudges_are_taken_once_through_the_town(town: Town, operator: Agent, add_agent: Callable[..., Agent]) -> None:
    polecat, witness = add_agent("polecat-1"), add_agent("witness-1", "witness")
    town.nudge(witness, "polecat-1", "are you stuck?")
    town.nudge(operator, "polecat-1", "wrap up")
    assert town._store.messages.pending_count() == 2
    assert town.heartbeat(polecat).pending_nudges == 2
    taken = town.take_nudges(polecat)
    assert [(m.sender, m.body, m.state) for m in taken] == [
        ("witness-1", "are you stuck?", "delivered"),
        ("operator", "wrap up", "delivered"),
    ]
    assert town.take_nudges(polecat) == []
    assert town._store.messages.pending_count() == 0
    town.nudge(operator, "polecat-1", "one more")
    assert town.heartbeat(polecat).pending_nudges == 1  # the two delivered ones are no longer pending
    assert [m.body for m in town.take_nudges(polecat)] == ["one more"]
    assert town.take_nudges(witness) == [] and town.take_nudges(operator) == []
    assert verbs(town._store).count(Verb.nudge_delivered) == 3


def test_mail_through_the_town_reaches_the_inbox_and_is_acknowledged(
    town: Town, add_agent: Callable[..., Agent]
) -> None:
    mayor, polecat = add_agent("mayor", "mayor"), add_agent("polecat-1")
    mail = town.mail_send(mayor, "polecat-1", "plan", "start with gt-1", thread="plan")
    (got,) = town.inbox(polecat)
    assert (got.id, got.sender, got.subject, got.state) == (mail.id, "mayor", "plan", "delivered")
    assert town.acknowledge(polecat, [mail.id]) == 1
    assert town.inbox(polecat) == []
    assert [m.id for m in town.inbox(polecat, unread_only=False)] == [mail.id]


def test_mail_to_an_unknown_agent_or_without_a_body_is_refused(
    town: Town, operator: Agent, add_agent: Callable[..., Agent]
) -> None:
    add_agent("polecat-1")
    with pytest.raises(NotFound, match="no agent 'ghost' to send to"):
        town.mail_send(operator, "ghost", "s", "b")
    with pytest.raises(InvalidInput, match="mail needs a body"):
        town.mail_send(operator, "polecat-1", "s", "  ")
    with pytest.raises(InvalidInput, match="a nudge needs text"):
        town.nudge(operator, "polecat-1", "")
    assert town._store.db.query_one("SELECT count(*) AS n FROM messages")["n"] == 0


def test_an_unknown_message_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no message 42"):
        store.messages.get(42)
