"""How tool bodies run: store-only bodies on the event loop, everything else on long-lived worker threads.

A body on the loop costs no thread hand-off and, more to the point, no fight for the GIL: a worker thread
running SQLite gives the GIL up and takes it back around every statement, and each time waits for the loop.
Its writes do not wait for the write lock (taken: the body runs on a worker thread instead, nothing changed)
and do not sync the journal; the call answers only once `GroupSync` has made them durable, one fdatasync
on the sync thread serving every call that waits when it starts (a call alone on a loop with nothing else
waiting syncs on the loop: there is nothing for the loop to do meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import select
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gastown_mcp.models import Agent
from gastown_mcp.town import Town, WriteLockTaken

T = TypeVar("T")
# As many tool bodies at once as anyio's default thread limit allowed.
TOOL_THREADS = 40
# Tools whose bodies do store work only (a hand-in excepted, see `Town.deferred_writes`), answer in well under a
# second and send no notifications: they run on the event loop, and over HTTP (2026-07-28) are answered as
# plain JSON without the SDK's stand-by for a notification stream (see `transports.quick_lane`).
QUICK_TOOLS = frozenset({"bead_claim", "bead_complete"})


class ToolThreads:
    """The threads tool bodies run on (the store is synchronous): long-lived, so each keeps its database
    connection, and a hand-off costs about half of `anyio.to_thread`'s (no capacity limiter, no per-call
    cancel scope). Started on first use, so a server that is built and never called starts no thread."""

    def __init__(self, size: int = TOOL_THREADS) -> None:
        self.size = size
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="gastown-tool")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


class GroupSync:
    """Makes writes made on the loop durable before their calls answer: one journal sync at a time on a thread of
    its own, covering every call that was waiting when it began (group commit). The thread is started on first
    use and waits on a queue: a hand-off to it costs about half of one to a pool's worker (no executor
    bookkeeping, no thread-count check per call)."""

    def __init__(self, town: Town) -> None:
        self.town = town
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._running = False
        self._queue: queue.SimpleQueue[tuple[int, asyncio.Future[None]]] | None = None

    async def wait(self, end: int, *, alone: bool = False) -> None:
        """Return once the journal is on disk up to offset `end`. `alone`: no other quick call is in flight; if
        the loop has nothing else to do either, it syncs itself (two thread hops less, each a wait for a core).
        Otherwise the sync thread syncs while the loop serves the requests waiting, and their writes join the
        sync after (one fdatasync per group, not per call)."""
        if alone and not self._running and loop_idle(asyncio.get_running_loop()):
            self.town.make_durable(end)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((end, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._rounds())
        await future

    def _start(self) -> queue.SimpleQueue[tuple[int, asyncio.Future[None]]]:
        jobs: queue.SimpleQueue[tuple[int, asyncio.Future[None]]] = queue.SimpleQueue()

        def serve() -> None:
            while True:
                end, done = jobs.get()
                try:
                    self.town.make_durable(end)
                except BaseException as exc:  # the waiting calls hear of it (an error, never a false success)
                    outcome: BaseException | None = exc
                else:
                    outcome = None
                with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: no one is waiting
                    done.get_loop().call_soon_threadsafe(_settle, done, outcome)

        threading.Thread(target=serve, name="gastown-journal-sync", daemon=True).start()
        self._queue = jobs
        return jobs

    async def _rounds(self) -> None:
        jobs = self._queue or self._start()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                jobs.put((max(end for end, _ in batch), done))
                try:
                    await done
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    raise
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._running = False


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


def loop_idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether `loop` has nothing to run now: no callback ready and no socket with something waiting. Looks at
    the default loop's selector (epoll is level-triggered: a look with no timeout takes nothing away from the
    loop's own). Those are private parts of asyncio; where they are missing the answer is False, which is always
    safe (the sync runs on a thread)."""
    ready = getattr(loop, "_ready", None)
    poller = getattr(getattr(loop, "_selector", None), "_selector", None)
    epoll = getattr(select, "epoll", None)
    if ready is None or epoll is None or not isinstance(poller, epoll):
        return False
    return not ready and not poller.poll(0)


class Bodies:
    """Runs a tool body as its caller: `quick` ones (store work only) on the loop, the rest on a thread."""

    def __init__(self, town: Town, threads: ToolThreads) -> None:
        self.town = town
        self.threads = threads
        self.sync = GroupSync(town)
        self.in_flight = 0  # quick calls between their start and their answer

    async def run(self, fn: Callable[[Agent], T], caller: Agent, *, quick: bool) -> T:
        if not quick:
            return await self.threads.run(fn, caller)
        self.in_flight += 1
        try:
            return await self._on_loop(fn, caller)
        finally:
            self.in_flight -= 1

    async def _on_loop(self, fn: Callable[[Agent], T], caller: Agent) -> T:
        block = None
        try:
            with self.town.deferred_writes() as block:
                return fn(caller)
        except WriteLockTaken:  # the write lock was taken, or the call needs slow work: nothing changed
            return await self.threads.run(fn, caller)
        finally:
            if block is not None and block.end:  # durable before the caller hears anything, an error included
                await self.sync.wait(block.end, alone=self.in_flight == 1)
