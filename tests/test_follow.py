"""Following the journal with a file watch: a write made before the watch began is not missed."""

from __future__ import annotations

import threading

import anyio

from gastown_mcp.config import Settings
from gastown_mcp.follow import ajournal_changes, journal_changes
from gastown_mcp.town import Town, operator


async def test_the_first_wake_up_of_the_live_follower_reads_what_was_written_before_its_watch(
    town: Town, settings: Settings
) -> None:
    changes = ajournal_changes(settings.journal_path, heartbeat_s=0.2)  # its watch starts at the first anext
    town.bead_create(operator(), "written after the reader's first read, before the watch")
    try:
        with anyio.fail_after(10):
            assert await anext(changes) is True  # not a quiet heartbeat: the caller reads again
            assert await anext(changes) is False  # nothing since: quiet
    finally:
        await changes.aclose()


def test_the_first_wake_up_of_feed_follow_reads_too(town: Town, settings: Settings) -> None:
    stop = threading.Event()
    changes = journal_changes(settings.journal_path, heartbeat_s=0.2, stop=stop)
    town.bead_create(operator(), "written before the watch")
    assert next(changes) is True
    assert next(changes) is False
    stop.set()
