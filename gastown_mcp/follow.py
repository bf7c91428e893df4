"""Following the town as it changes, without polling: every write appends to the journal (`events.jsonl`)
and commits into the database's write-ahead log (`town.db-wal`), so a file watch on the two (`watchfiles`,
inotify on Linux) says when to read events again. The journal line is written just before the commit, the
WAL frame by it: watching both means the wake-up after a commit is never missed.

`journal_changes` is for synchronous followers (`gastown feed --follow`), `ajournal_changes` for the
dashboard's live feed. Both also wake every `heartbeat_s` with nothing changed, so a caller can check its
connection or a replaced journal file; the watch is on the town directory (not recursive), so a journal
that is replaced is still followed.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import anyio
import watchfiles

from gastown_mcp.config import DB_FILE

DEBOUNCE_MS = 100  # changes closer together than this are one wake-up
STEP_MS = 10


def _only(journal: Path) -> watchfiles.BaseFilter:
    names = {journal.name, f"{DB_FILE}-wal"}

    class JournalOnly(watchfiles.BaseFilter):
        def __call__(self, change: watchfiles.Change, path: str) -> bool:
            return Path(path).name in names

    return JournalOnly()


def _options(journal: Path, heartbeat_s: float) -> dict[str, Any]:
    """How both followers watch: the journal's directory, for the journal and the database's WAL only."""
    return {
        "watch_filter": _only(Path(journal)),
        "recursive": False,
        "debounce": DEBOUNCE_MS,
        "step": STEP_MS,
        "rust_timeout": int(heartbeat_s * 1000),
        "yield_on_timeout": True,
    }


def journal_changes(journal: Path, heartbeat_s: float = 5.0, stop: threading.Event | None = None) -> Iterator[bool]:
    """Yields True after the journal changed, False after `heartbeat_s` of quiet. Ctrl-C or `stop` ends it."""
    for changes in watchfiles.watch(
        Path(journal).parent, **_options(journal, heartbeat_s), raise_interrupt=True, stop_event=stop
    ):
        yield bool(changes)


async def ajournal_changes(
    journal: Path, heartbeat_s: float = 15.0, stop: anyio.Event | None = None
) -> AsyncGenerator[bool, None]:
    """The async form: True after the journal changed, False after `heartbeat_s` of quiet; ends on `stop`."""
    async for changes in watchfiles.awatch(Path(journal).parent, **_options(journal, heartbeat_s), stop_event=stop):
        yield bool(changes)
