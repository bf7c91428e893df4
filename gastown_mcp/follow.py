"""Following the town as it changes, without polling: every write appends to the journal (`events.jsonl`)
and commits into the database's write-ahead log (`town.db-wal`), so a file watch on the two (`watchfiles`,
inotify on Linux) says when to read events again. The journal line is written just before the commit, the
WAL frame by it: watching both means the wake-up after a commit is never missed.

`WorktreeActivity` watches agents' worktrees the same way for the witness's idle check.

`journal_changes` is for synchronous followers (`gastown feed --follow`); it also wakes every `heartbeat_s`
with nothing changed, so a caller can check a replaced journal file; the watch is on the town directory (not
recursive), so a journal that is replaced is still followed. The watch starts at the first iteration, after
the caller's first read: the first wake-up therefore always says True, so what was written in between is
read then, not missed.

`JournalBell` is one such watch shared by every live feed of the dashboard (async followers), asleep while
none is open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import watchfiles

from gastown_mcp.config import DB_FILE

log = logging.getLogger(__name__)

DEBOUNCE_MS = 100  # changes closer together than this are one wake-up
STEP_MS = 10
# How often the shared watch looks for changes: each look wakes a thread and takes the interpreter lock. On
# a quiet town it looks every BELL_STEP_MS (what an open dashboard costs an idle town; the first write after
# the quiet reaches the feed within one to two steps); for BELL_BUSY_S after a change, every STEP_MS. It is
# stopped between looks of at most BELL_STOP_MS (a stop event would be one more call at every look).
BELL_STEP_MS = 100
BELL_BUSY_S = 10.0
BELL_STOP_MS = 1000


def _only(journal: Path) -> watchfiles.BaseFilter:
    names = {journal.name, f"{DB_FILE}-wal"}

    class JournalOnly(watchfiles.BaseFilter):
        def __call__(self, change: watchfiles.Change, path: str) -> bool:
            return Path(path).name in names

    return JournalOnly()


def _options(journal: Path, heartbeat_s: float) -> dict[str, Any]:
    """How `journal_changes` watches: the journal's directory, for the journal and the database's WAL only."""
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
    first = True
    for changes in watchfiles.watch(
        Path(journal).parent, **_options(journal, heartbeat_s), raise_interrupt=True, stop_event=stop
    ):
        yield bool(changes) or first
        first = False


class Listener:
    """One async follower of a `JournalBell` (made by `JournalBell.listen`)."""

    def __init__(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._rung = anyio.Event()

    def _set(self) -> None:
        self._rung.set()

    def ring(self) -> None:
        """From the watch thread: wake the follower (on its own event loop)."""
        with contextlib.suppress(Exception):  # its loop has ended: nothing to wake
            anyio.from_thread.run_sync(self._set, token=self._token)

    async def wait(self, timeout: float) -> bool:
        """True once the journal changed since the last wait (at once if it did in between), False after
        `timeout` seconds of quiet. Cancelling it (a closed connection) ends it at once."""
        with anyio.move_on_after(timeout):
            await self._rung.wait()
        if not self._rung.is_set():
            return False
        self._rung = anyio.Event()
        return True


class JournalBell:
    """One file watch of the journal (and WAL) for every async follower in a process, instead of one each.

    The watch runs in a thread of its own while at least one follower listens and stops with the last one; a
    change rings every follower. It looks for changes every `step_ms` while the town is quiet and every STEP_MS
    for BELL_BUSY_S after a change (see BELL_STEP_MS). Each follower waits on an event of its own loop, so a
    quiet one costs nothing and a closed one leaves at once. `listen()` returns once the watch is in place, so a
    write after the follower's first read is never missed. If the watch cannot be made or fails (the directory
    is gone) the followers are rung, so they read; their own quiet checks carry on, and the next one retries.
    """

    def __init__(self, journal: Path, step_ms: int = BELL_STEP_MS) -> None:
        self.journal = Path(journal)
        self.step_ms = step_ms
        self.error: str | None = None
        self._names = {self.journal.name, f"{DB_FILE}-wal"}
        self._lock = threading.Lock()
        self._listeners: set[Listener] = set()
        self._stop: threading.Event | None = None

    @property
    def watching(self) -> bool:
        with self._lock:
            return self._stop is not None

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Listener]:
        listener = Listener()
        with self._lock:
            self._listeners.add(listener)
            if self._stop is None:
                self._start()
        try:
            yield listener
        finally:
            with self._lock:
                self._listeners.discard(listener)
                if not self._listeners and self._stop is not None:
                    self._stop.set()
                    self._stop = None

    def _start(self) -> None:
        from watchfiles._rust_notify import RustNotify  # as in WorktreeActivity: made here, in place on return

        try:
            notify = RustNotify([str(self.journal.parent)], False, False, 300, False, True)
        except (OSError, RuntimeError) as exc:
            self.error = f"the journal cannot be watched: {exc}"
            log.warning("%s", self.error)
            return
        self.error = None
        self._stop = threading.Event()
        threading.Thread(target=self._run, args=(notify, self._stop), name="journal-bell", daemon=True).start()

    def _run(self, notify: Any, stop: threading.Event) -> None:
        try:
            busy_until = 0.0
            while not stop.is_set():
                busy = time.monotonic() < busy_until
                changes = notify.watch(DEBOUNCE_MS, STEP_MS if busy else self.step_ms, BELL_STOP_MS, None)
                if isinstance(changes, set) and any(Path(path).name in self._names for _, path in changes):
                    busy_until = time.monotonic() + BELL_BUSY_S
                    self._ring()
        except Exception as exc:  # the watch broke: followers read, the next one watches again
            self.error = f"the journal watch stopped: {exc}"
            log.warning("%s", self.error)
            with self._lock:
                if self._stop is stop:
                    self._stop = None
            self._ring()
        finally:
            notify.close()

    def _ring(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.ring()


class WorktreeActivity:
    """When each watched worktree last changed, recorded by one file watch (inotify) over all of them.

    `watch(roots)` sets what is watched; it returns once the watch is in place, so a change made after it is
    never missed. A thread of its own records the time (`clock`) of each change under a root; nothing walks a
    tree. `last_change(root)` is None for a root not under a working watch (the caller decides what to do: the
    witness then walks the tree as before), else the last change seen (0.0: none yet).
    """

    def __init__(self, clock: Callable[[], float], *, debounce_ms: int = 50, heartbeat_s: float = 5.0) -> None:
        self.clock = clock
        self.debounce_ms = debounce_ms
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self.error: str | None = None  # why the last watch could not be made (too many inotify watches, ...)
        self._asked: frozenset[str] = frozenset()  # what the caller last asked to watch
        self._roots: frozenset[str] = frozenset()  # what is watched
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._notify: Any = None
        self._swap = threading.Event()  # a new watch replaced the one the thread waits on
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, roots: Iterable[str | Path]) -> None:
        wanted = frozenset(str(Path(r)) for r in roots)
        if wanted == self._asked or self._closed.is_set():
            return
        self._asked = wanted
        from watchfiles._rust_notify import RustNotify  # documented as the Rust backend's direct interface

        notify = None
        if wanted:
            try:
                try:
                    notify = RustNotify(sorted(wanted), False, False, 300, True, True)
                except FileNotFoundError:  # a worktree removed since it was listed: watch the others
                    wanted = frozenset(r for r in wanted if Path(r).is_dir())
                    notify = RustNotify(sorted(wanted), False, False, 300, True, True) if wanted else None
                self.error = None
            except (OSError, RuntimeError) as exc:  # the inotify limits are reached
                self.error = str(exc)
        with self._lock:
            self._roots = wanted if notify is not None else frozenset()
            self._last = {r: self._last.get(r, 0.0) for r in self._roots}
            self._notify = notify
            self._swap.set()
        if notify is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="worktree-watch", daemon=True)
            self._thread.start()

    def last_change(self, root: str | Path) -> float | None:
        with self._lock:
            return self._last.get(str(Path(root)))

    def close(self) -> None:
        self._closed.set()
        self._swap.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._notify is not None:
                self._notify.close()
                self._notify = None

    def _run(self) -> None:
        current = None
        while not self._closed.is_set():
            with self._lock:
                self._swap.clear()
                if current is not None and current is not self._notify:
                    current.close()  # replaced while this thread waited on it
                current = self._notify
            if current is None:
                self._swap.wait()
                continue
            changes = current.watch(self.debounce_ms, STEP_MS, self.heartbeat_ms, self._swap)  # 'stop' on a swap
            if isinstance(changes, set) and changes:
                self._record({path for _, path in changes})

    def _record(self, paths: set[str]) -> None:
        now = self.clock()
        with self._lock:
            for root in self._roots:
                prefix = root.rstrip("/") + "/"
                if any(p == root or p.startswith(prefix) for p in paths):
                    self._last[root] = now
