"""The town process behind `gastown up`: MCP HTTP server, LLM gateway and witness in one event loop.

With a container runtime it also creates the town's internal network and serves both ports on the network's
gateway IP (the only host address agents can reach) as well as on loopback. A state file in the town
directory tells other commands (`gastown agent spawn`, `gastown down`) where the running town is.
Shutdown is graceful: agents are stopped, their beads go back to the queue, nothing is lost.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from pydantic import BaseModel

from gastown_mcp.config import Settings
from gastown_mcp.errors import Conflict, GastownError, InvalidInput, NotFound
from gastown_mcp.fleet import Fleet, FleetConfig
from gastown_mcp.models import AgentState, Role
from gastown_mcp.runtime.protocol import Limits, Runtime
from gastown_mcp.store import Store
from gastown_mcp.supervisor.witness import Witness
from gastown_mcp.town import Town, system_agent

STATE_FILE = "run/town.json"


class RunState(BaseModel):
    """Where a running town listens; written by `gastown up`, read by other commands."""

    pid: int
    started_at: float
    mcp_url: str
    gateway_url: str
    agent_mcp_url: str | None = None
    agent_gateway_url: str | None = None
    network: str | None = None
    pid_namespace: str | None = None  # a town in a container (compose.yaml) has a pid only it can signal

    @property
    def foreign(self) -> bool:
        """The town runs in another PID namespace, so `pid` means nothing here."""
        return self.pid_namespace is not None and self.pid_namespace != pid_namespace()


def pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def state_path(settings: Settings) -> Path:
    return settings.town_dir / STATE_FILE


def read_state(settings: Settings) -> RunState | None:
    """The running town's state, or None when no town process is alive for this directory."""
    path = state_path(settings)
    if not path.exists():
        return None
    try:
        state = RunState.model_validate_json(path.read_text())
    except ValueError:
        return None
    if state.foreign:
        return state if _answers(state.mcp_url) else None
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return state


def _answers(url: str) -> bool:
    """Something listens on the host and port of `url` (how to tell a town in a container is alive)."""
    host, _, port = url.split("/")[2].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def role_limits(settings: Settings) -> dict[str, Limits]:
    out = {}
    for role, fields in settings.runtime.limits.items():
        try:
            values: dict[str, Any] = {k: (float(v) if k == "cpus" else int(v)) for k, v in fields.items()}
            out[role] = Limits(**values)
        except TypeError as exc:
            raise InvalidInput(f"bad [runtime.limits.{role}] in town.toml: {exc}") from exc
    return out


def attach_fleet(store: Store, settings: Settings) -> Fleet:
    """A fleet for commands run beside a running town (`gastown agent spawn`): same network, same URLs."""
    state = read_state(settings)
    if state is None or state.agent_mcp_url is None:
        raise NotFound("no running town with a container runtime here: start one with `gastown up`")
    from gastown_mcp.runtime.docker_backend import DockerRuntime

    return Fleet(
        store,
        DockerRuntime.connect(),
        FleetConfig(
            town=settings.town.name,
            town_dir=settings.town_dir,
            mcp_url=state.agent_mcp_url,
            gateway_url=state.agent_gateway_url,
            network=state.network,
            image=settings.runtime.image,
            limits=role_limits(settings),
        ),
    )


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the town process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Conflict(f"cannot listen on {host}:{port} ({exc.strerror}); pick another port in town.toml") from exc
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def _listen(host: str, port: int, section: str) -> list[socket.socket]:
    """Sockets for a `[server]` or `[gateway]` host: always loopback (the state file's URLs use it), plus the
    configured address. `0.0.0.0` is one wildcard socket, which also covers the town network's bridge."""
    if host in ("127.0.0.1", "localhost"):
        return [_bind("127.0.0.1", port)]
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise InvalidInput(
            f"[{section}] host = {host!r} in town.toml is not an IPv4 address: use 127.0.0.1 (this machine only), "
            "0.0.0.0 (every interface) or one of this machine's IPv4 addresses"
        ) from None
    if addr.is_unspecified:
        return [_bind(host, port)]
    local = _bind("127.0.0.1", port)
    return [local, _bind(host, local.getsockname()[1])]


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
    _servers: list[uvicorn.Server] = field(default_factory=list)
    _stopping: anyio.Event | None = None

    def _setup(self) -> tuple[Town, list[tuple[Any, list[socket.socket]]]]:
        from gastown_mcp.gateway import GatewayConfig, build_gateway
        from gastown_mcp.server import http_app

        s = self.settings
        store = Store(s)
        mcp_socks = _listen(s.server.host, s.server.port, "server")
        gw_socks = _listen(s.gateway.host, s.gateway.port, "gateway")
        mcp_port, gw_port = mcp_socks[0].getsockname()[1], gw_socks[0].getsockname()[1]
        fleet = None
        agent_mcp = agent_gw = network = None
        if self.runtime is not None:
            from gastown_mcp.runtime.docker_backend import DockerRuntime
            from gastown_mcp.runtime.network import NetworkPolicy, ensure_town_network

            assert isinstance(self.runtime, DockerRuntime)
            net = ensure_town_network(
                self.runtime.client, s.town.name, NetworkPolicy((mcp_port, gw_port), s.runtime.subnet)
            )
            for socks, port in ((mcp_socks, mcp_port), (gw_socks, gw_port)):
                if not any(sock.getsockname()[0] in ("0.0.0.0", net.gateway) for sock in socks):
                    socks.append(_bind(net.gateway, port))
            agent_mcp, agent_gw, network = net.url(mcp_port, "/mcp"), net.url(gw_port), net.name
            fleet = Fleet(
                store,
                self.runtime,
                FleetConfig(
                    town=s.town.name,
                    town_dir=s.town_dir,
                    mcp_url=agent_mcp,
                    gateway_url=agent_gw,
                    network=network,
                    image=s.runtime.image,
                    limits=role_limits(s),
                ),
            )
            removed = fleet.cleanup_orphans()
            if removed:
                self.on_status(f"removed {len(removed)} orphan containers: {', '.join(removed)}")
        town = Town(store, s, fleet)
        extra_hosts = [agent_mcp.split("/")[2]] if agent_mcp else []
        if s.server.host not in ("127.0.0.1", "localhost", "0.0.0.0"):
            extra_hosts.append(f"{s.server.host}:{mcp_port}")  # with 0.0.0.0, list client names in allowed_hosts
        mcp = http_app(town, "127.0.0.1", mcp_port, [*s.server.allowed_hosts, *extra_hosts])
        gw_cfg = GatewayConfig(**s.gateway.model_dump())
        gateway = build_gateway(store, gw_cfg, self.provider_env)
        self.state = RunState(
            pid=os.getpid(),
            started_at=time.time(),
            mcp_url=f"http://127.0.0.1:{mcp_port}/mcp",
            gateway_url=f"http://127.0.0.1:{gw_port}",
            agent_mcp_url=agent_mcp,
            agent_gateway_url=agent_gw,
            network=network,
            pid_namespace=pid_namespace(),
        )
        self.town = town
        return town, [(mcp, mcp_socks), (gateway, gw_socks)]

    async def run(self, ready: Callable[[RunState], None] | None = None) -> None:
        town, apps = await anyio.to_thread.run_sync(self._setup)
        assert self.state is not None
        self._stopping = anyio.Event()
        witness = Witness(town, self.runtime)
        path = state_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with anyio.create_task_group() as outer:
                async with anyio.create_task_group() as servers:
                    for app, socks in apps:
                        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
                        server = _QuietServer(config)
                        self._servers.append(server)
                        servers.start_soon(server.serve, socks)
                    while not all(srv.started for srv in self._servers):
                        await anyio.sleep(0.02)
                    path.write_text(self.state.model_dump_json(indent=2))
                    if ready is not None:
                        ready(self.state)
                    outer.start_soon(self._witness_loop, witness)
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
            if self.teardown:
                await anyio.to_thread.run_sync(self._teardown)
            town.store.close()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.stop()
                return

    async def _witness_loop(self, witness: Witness) -> None:
        interval = self.settings.witness.interval_seconds
        while True:
            try:
                actions = await anyio.to_thread.run_sync(witness.tick)
                for action in actions:
                    self.on_status(f"witness: {action.verb} {action.target} ({action.reason})")
            except GastownError as exc:
                self.on_status(f"witness: {exc}")
            await anyio.sleep(interval)

    def _stop_agents(self) -> None:
        town = self.town
        if town is None or town.fleet is None:
            return
        me = system_agent("town", Role.overseer)
        for agent in town.store.agents.all():
            if agent.state in (AgentState.running, AgentState.idle, AgentState.nudged, AgentState.stalled) and (
                agent.metadata.get("container")
            ):
                with contextlib.suppress(GastownError):
                    town.fleet.stop(me.name, agent.name, "town shut down")

    def _teardown(self) -> None:
        from gastown_mcp.runtime.docker_backend import DockerRuntime
        from gastown_mcp.runtime.network import remove_town_network

        if isinstance(self.runtime, DockerRuntime):
            with contextlib.suppress(GastownError):
                self.runtime.cleanup(self.settings.town.name)
                remove_town_network(self.runtime.client, self.settings.town.name)


def stop_running_town(settings: Settings, timeout_s: float = 30) -> RunState:
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
        try:
            os.kill(state.pid, 0)
        except ProcessLookupError:
            return state
        time.sleep(0.1)
    raise Conflict(f"town process {state.pid} did not stop within {timeout_s:.0f}s; check `gastown status`")


def provider_env(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """The provider keys the gateway may use (the variables its upstreams name), read once at the edge."""
    upstreams = getattr(settings.gateway, "upstreams", None) or {}
    names = {"ANTHROPIC_API_KEY"} | {u.get("key_env") for u in upstreams.values() if isinstance(u, dict)}
    return {k: v for k, v in env.items() if k in names and v}
