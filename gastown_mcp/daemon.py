"""The town process behind `gastown up`: process lifecycle only (serve, supervise, shut down, state file).

`assemble.assemble_process` builds the town and its apps (MCP HTTP server, LLM gateway; with a runtime also
the town network, served on its gateway IP as well as loopback); this module runs them in one event loop with
the witness, writes the state file other commands attach through, and shuts down gracefully: agents are
stopped, their beads go back to the queue, nothing is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from gastown_mcp import serving
from gastown_mcp.assemble import assemble_process, provider_env
from gastown_mcp.config import Settings
from gastown_mcp.errors import Conflict, GastownError, NotFound
from gastown_mcp.models import Role
from gastown_mcp.runstate import RunState, read_state, state_path
from gastown_mcp.runtime import Runtime
from gastown_mcp.supervisor.dogs import Freezer, Kennel
from gastown_mcp.supervisor.merge_queue import MergeQueue
from gastown_mcp.supervisor.overseer import Overseer
from gastown_mcp.supervisor.reconciler import Reconciler
from gastown_mcp.supervisor.witness import Witness
from gastown_mcp.town import Town, system_agent

SHUTDOWN = system_agent("town", Role.overseer)

__all__ = ["RunState", "TownProcess", "provider_env", "read_state", "state_path", "stop_running_town"]


@dataclass
class TownProcess:
    """Everything `gastown up` runs. Build it, then `await run()`; `stop()` asks it to shut down."""

    settings: Settings
    provider_env: Mapping[str, str]
    runtime: Runtime | None = None
    on_status: Callable[[str], None] = lambda line: None
    teardown: bool = False  # on exit also remove the town's containers and network (demos, tests)
    state: RunState | None = None
    town: Town | None = None
    overseer: Overseer | None = None  # with `[overseer] enabled = true`
    _servers: list[serving.Server] = field(default_factory=list)
    _stopping: anyio.Event | None = None

    async def run(self, ready: Callable[[RunState], None] | None = None) -> None:
        with hold_town_lock(self.settings):
            await self._run(ready)

    async def _run(self, ready: Callable[[RunState], None] | None) -> None:
        built = await anyio.to_thread.run_sync(
            lambda: assemble_process(self.settings, self.provider_env, self.runtime, self.on_status)
        )
        town, apps, self.state, self.town = built.town, built.apps, built.state, built.town
        self._stopping = anyio.Event()
        witness = Witness(town)
        wake = threading.Event()
        town.on_intent(wake.set)
        path = state_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with anyio.create_task_group() as outer:
                async with anyio.create_task_group() as servers:
                    for app, socks in apps:
                        server = serving.make_server(app, lifespan="on", graceful_s=5)
                        self._servers.append(server)
                        servers.start_soon(server.serve, socks)
                    while not all(srv.started for srv in self._servers):
                        await anyio.sleep(0.02)
                    path.write_text(self.state.model_dump_json(indent=2))
                    if ready is not None:
                        ready(self.state)
                    if self.runtime is not None:
                        # Intent first: a request made while the town was down is carried out before the
                        # witness looks at leases (it never judges an agent that has not started).
                        reconciler = Reconciler(town)
                        await anyio.to_thread.run_sync(reconciler.tick)
                        interval = self.settings.scheduler.interval_seconds
                        outer.start_soon(self._loop, "reconciler", reconciler.tick, interval, wake)
                    outer.start_soon(self._loop, "witness", witness.tick)
                    outer.start_soon(self._loop, "merge queue", MergeQueue(town).tick)
                    outer.start_soon(self._loop, "dogs", Kennel(town).tick, self.settings.dogs.interval_seconds)
                    outer.start_soon(self._loop, "estop", Freezer(town).tick, 1.0)
                    if self.settings.overseer.enabled:
                        from gastown_mcp.planners.overseer import build_overseer

                        self.overseer = Overseer(town, build_overseer(town, self.state.gateway_url))
                        outer.start_soon(
                            self._loop, "overseer", self.overseer.tick, self.settings.overseer.interval_seconds
                        )
                    if threading.current_thread() is threading.main_thread():
                        outer.start_soon(self._signals)  # elsewhere (tests, embedding) the owner calls stop()
                    await self._stopping.wait()
                    self.on_status("shutting down: stopping agents, returning their beads to the queue")
                    await anyio.to_thread.run_sync(self._stop_agents)
                    for srv in self._servers:
                        srv.should_exit = True
                outer.cancel_scope.cancel()
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            # Nothing is left running or exited: containers and (with no agent left) the network go.
            await anyio.to_thread.run_sync(town.teardown, SHUTDOWN)
            witness.close()
            town.close()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.stop()
                return

    async def _loop(
        self,
        name: str,
        tick: Callable[[], Sequence[Any]],
        interval: float | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        """Step a deterministic supervisor every interval, in a worker thread; `wake` cuts the wait short."""
        interval = self.settings.witness.interval_seconds if interval is None else interval
        while True:
            try:
                for step in await anyio.to_thread.run_sync(tick):
                    self.on_status(f"{name}: {step.verb} {step.target} ({step.reason})")
            except GastownError as exc:
                self.on_status(f"{name}: {exc}")
            if wake is None:
                await anyio.sleep(interval)
                continue
            # A flag checked from the event loop, not a waiting worker thread: a thread blocked in wait() when
            # the town shuts down would keep the process from exiting.
            with anyio.move_on_after(interval):
                while not wake.is_set():
                    await anyio.sleep(0.05)
            wake.clear()

    def _stop_agents(self) -> None:
        if self.town is not None:
            self.town.stop_all(SHUTDOWN, "town shut down")


LOCK_FILE = "run/town.lock"


@contextlib.contextmanager
def hold_town_lock(settings: Settings) -> Iterator[None]:
    """One town process per directory: an exclusive lock held for the process's life (gone if it dies)."""
    path = settings.town_dir / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            running = read_state(settings)
            who = f" (pid {running.pid}, MCP at {running.mcp_url})" if running else ""
            raise Conflict(
                f"a town is already running in {settings.town_dir}{who}; stop it with `gastown down` first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    """The process exists and has not exited (an exited child its parent has not reaped yet is a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def stop_running_town(settings: Settings, timeout_s: float = 90) -> RunState:
    """`gastown down`: ask the running town to shut down gracefully and wait for it."""
    state = read_state(settings)
    if state is None:
        raise NotFound(f"no running town in {settings.town_dir}")
    if state.foreign:
        raise Conflict(
            f"the town in {settings.town_dir} runs in a container (another PID namespace): stop it there, "
            "e.g. `docker compose stop town`"
        )
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _running(state.pid):
            return state
        time.sleep(0.1)
    raise Conflict(f"town process {state.pid} did not stop within {timeout_s:.0f}s; check `gastown status`")
