"""Following the journal with a file watch: a write made before the watch began is not missed; the dashboard's
live feeds share one watch, which sleeps while none is open."""

from __future__ import annotations

import threading

import anyio

from gastown_mcp.config import Settings
from gastown_mcp.follow import JournalBell, journal_changes
from gastown_mcp.town import Town, operator


def test_the_first_wake_up_of_feed_follow_reads_too(town: Town, settings: Settings) -> None:
    stop = threading.Event()
    changes = journal_changes(settings.journal_path, heartbeat_s=0.2, stop=stop)
    town.bead_create(operator(), "written before the watch")
    assert next(changes) is True
    assert next(changes) is False
    stop.set()


async def test_one_watch_rings_every_live_follower_and_stops_with_the_last(town: Town, settings: Settings) -> None:
    bell = JournalBell(settings.journal_path)
    assert not bell.watching
    async with bell.listen() as one, bell.listen() as two:
        assert bell.watching
        town.bead_create(operator(), "written just after the watch was made")
        with anyio.fail_after(10):
            assert await one.wait(10) is True
            assert await two.wait(10) is True
    assert not bell.watching  # nobody follows: no thread looks at the directory
    async with bell.listen() as again:  # a new follower starts a new watch
        town.bead_create(operator(), "seen by the next follower")
        with anyio.fail_after(10):
            assert await again.wait(10) is True
