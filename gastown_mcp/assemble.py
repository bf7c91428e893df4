"""The one composition root: settings -> store -> runtime -> Town -> apps.

Everything that builds a `Town` comes through here: the CLI (`open_town`, `attach_town`), `gastown up`
(`assemble_process`), demos, tests and benchmarks. Nothing else creates a store or holds a runtime.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gastown_mcp.config import Settings
from gastown_mcp.errors import InvalidInput, NotFound
from gastown_mcp.models import Role, Verb, now_iso
from gastown_mcp.runstate import RunState, pid_namespace, read_state
from gastown_mcp.store import Store
from gastown_mcp.town import Fleet, FleetConfig, Town, role_limits, system_agent

if TYPE_CHECKING:  # the runtime and the servers load only where a command needs them (CLI start-up time)
    from gastown_mcp.runtime import Runtime


def open_town(
    settings: Settings, fleet: FleetConfig | None = None, runtime: Runtime | None = None, *, new: bool = False
) -> Town:
    """A town over the database in `settings.town_dir` (created and migrated if new); `town.close()` ends it.

    With `fleet` and `runtime`, the town can spawn agents: they reach it where `fleet` says. An existing town
    (town.toml present, `new` not set) whose database is missing, empty or fails its quick check is refused
    with the restore command: nothing silently starts empty.
    """
    existing = settings.is_town and not new and _had_database(settings)
    store = Store(settings, must_exist=existing, check=existing)
    if new:
        store.health.set("gastown", "created", {"at": now_iso()}, Verb.town_created)  # journal line 1
    town = Town(store, settings, None if fleet is None or runtime is None else Fleet(store, runtime, fleet))
    state = read_state(settings)
    if state is not None:
        use_models(town, state.gateway_url)  # plans made here are metered by the running town's gateway
    return town


def use_models(town: Town, gateway_url: str) -> None:
    """Give the town its refinery planner and deacon reviewer, calling the gateway at `gateway_url`."""
    from gastown_mcp.planners import build_models

    town.use_models(build_models(gateway_url))


def _had_database(settings: Settings) -> bool:
    """Any trace that this town had a database: the file itself, a journal with lines, or a backup. A town.toml
    with none of them (written by hand) gets a new database; anything else lost is refused, never recreated."""
    journal = settings.journal_path
    return (
        settings.db_path.exists()
        or (journal.exists() and journal.stat().st_size > 0)
        or any(settings.backups_dir.glob("town-*.db"))
    )


def restore_town(settings: Settings, backup: Path | None = None, *, journal: bool = True) -> dict[str, Any]:
    """Rebuild the town database: newest verified backup (or `backup`) + journal replay from its sequence
    (`journal` False: the named backup as it was)."""
    from dataclasses import asdict

    from gastown_mcp.store.backup import restore

    report = restore(settings.db_path, settings.journal_path, settings.backups_dir, backup, journal=journal)
    return asdict(report)


def scratch_town(town_dir: Path, name: str = "demo", prefix: str = "gt") -> Town:
    """A town with default settings in `town_dir` (demos, benchmarks): no town.toml is read or written."""
    settings = Settings.model_validate({"town_dir": town_dir, "town": {"name": name, "prefix": prefix}})
    return open_town(settings)


def fleet_config(settings: Settings, mcp_url: str, gateway_url: str | None, network: str | None) -> FleetConfig:
    # Agents on other machines (the swarm) get their repository from the town over git smart HTTP (githttp.py).
    remote = settings.runtime.backend == "swarm"
    return FleetConfig(
        git_url=mcp_url.removesuffix("/mcp") + "/git" if remote else None,
        town=settings.town.name,
        town_dir=settings.town_dir,
        mcp_url=mcp_url,
        gateway_url=gateway_url,
        network=network,
        image=settings.runtime.image,
        limits=role_limits(settings),
        agent_uid=settings.runtime.agent_uid,
        agent_gid=settings.runtime.agent_gid,
    )


def attach_town(settings: Settings) -> Town:
    """A town for a command run beside a running `gastown up`: same runtime, network and URLs."""
    state = read_state(settings)
    if state is None or state.agent_mcp_url is None:
        raise NotFound("no running town with a container runtime here: start one with `gastown up`")
    config = fleet_config(settings, state.agent_mcp_url, state.agent_gateway_url, state.network)
    from gastown_mcp.runtime import connect_runtime

    return open_town(settings, config, connect_runtime(settings.runtime))


@dataclass
class Assembly:
    """What `gastown up` serves: the town, its apps with their listening sockets, and where it listens."""

    town: Town
    apps: list[tuple[Any, list[socket.socket]]]
    state: RunState


def assemble_process(
    settings: Settings,
    provider_env: Mapping[str, str],
    runtime: Runtime | None,
    on_status: Callable[[str], None] = lambda line: None,
) -> Assembly:
    """Bind the MCP and gateway ports, make the town network (with a runtime), and build town and apps."""
    from gastown_mcp.gateway import build_gateway
    from gastown_mcp.githttp import with_git
    from gastown_mcp.runtime import NetworkPolicy
    from gastown_mcp.server import http_app
    from gastown_mcp.serving import bind
    from gastown_mcp.telemetry import build_tracing

    s = settings
    mcp_socks = listen(s.server.host, s.server.port, "server")
    gw_socks = listen(s.gateway.host, s.gateway.port, "gateway")
    mcp_port, gw_port = mcp_socks[0].getsockname()[1], gw_socks[0].getsockname()[1]
    agent_mcp = agent_gw = network = None
    config = None
    if runtime is not None:
        net = runtime.ensure_network(s.town.name, NetworkPolicy((mcp_port, gw_port), s.runtime.subnet))
        for socks, port in ((mcp_socks, mcp_port), (gw_socks, gw_port)):
            if not any(sock.getsockname()[0] in ("0.0.0.0", net.listen_address) for sock in socks):
                socks.append(bind(net.listen_address, port))
        agent_mcp, agent_gw, network = net.url(mcp_port, "/mcp"), net.url(gw_port), net.name
        config = fleet_config(s, agent_mcp, agent_gw, network)
    town = open_town(s, config, runtime)
    use_models(town, f"http://127.0.0.1:{gw_port}")
    removed = town.remove_orphans(system_agent("town", Role.overseer))
    if removed:
        on_status(f"removed {len(removed)} orphan containers: {', '.join(removed)}")
    if runtime is not None:
        on_status(town.open_agents_disk(system_agent("town", Role.overseer)))
    extra_hosts = [agent_mcp.split("/")[2]] if agent_mcp else []
    if s.server.host not in ("127.0.0.1", "localhost", "0.0.0.0"):
        extra_hosts.append(f"{s.server.host}:{mcp_port}")  # with 0.0.0.0, list client names in allowed_hosts
    mcp = with_git(http_app(town, "127.0.0.1", mcp_port, [*s.server.allowed_hosts, *extra_hosts]), town)
    tracing = build_tracing(s.otel)
    traces = town.trace_with(tracing) if tracing is not None else None
    gateway = build_gateway(town, provider_env, on_settled=traces.model_call if traces is not None else None)
    apps: list[tuple[Any, list[socket.socket]]] = [(mcp, mcp_socks), (gateway, gw_socks)]
    dashboard_url = None
    if s.dashboard.enabled:
        from gastown_mcp.dashboard import build_dashboard

        dash_socks = listen(s.dashboard.host, s.dashboard.port, "dashboard")
        dash_port = dash_socks[0].getsockname()[1]
        names = {"127.0.0.1", "localhost", *(sock.getsockname()[0] for sock in dash_socks)} - {"0.0.0.0"}
        apps.append((build_dashboard(town, s.dashboard, [f"{h}:{dash_port}" for h in names]), dash_socks))
        dashboard_url = f"http://127.0.0.1:{dash_port}"
    state = RunState(
        pid=os.getpid(),
        started_at=time.time(),
        mcp_url=f"http://127.0.0.1:{mcp_port}/mcp",
        gateway_url=f"http://127.0.0.1:{gw_port}",
        agent_mcp_url=agent_mcp,
        agent_gateway_url=agent_gw,
        network=network,
        pid_namespace=pid_namespace(),
        dashboard_url=dashboard_url,
    )
    return Assembly(town, apps, state)


def provider_env(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """The provider keys the gateway may use (the variables its upstreams name, and the `key_file`s they name
    under `file:<key_file>`), read once at the edge."""
    names = {"ANTHROPIC_API_KEY"} | {u.key_env for u in settings.gateway.upstreams.values() if u.key_env}
    keys = {k: v for k, v in env.items() if k in names and v}
    for u in settings.gateway.upstreams.values():
        if u.key_file and u.key_ref:
            path = settings.town_dir / u.key_file
            key = path.read_text().strip() if path.is_file() else ""
            if key:
                keys[u.key_ref] = key
    return keys


def listen(host: str, port: int, section: str) -> list[socket.socket]:
    """Sockets for a `[server]`, `[gateway]` or `[dashboard]` host: always loopback (the state file's URLs use
    it), plus the configured address. `0.0.0.0` is one wildcard socket, which also covers the town network's bridge."""
    from gastown_mcp.serving import bind

    if host in ("127.0.0.1", "localhost"):
        return [bind("127.0.0.1", port)]
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise InvalidInput(
            f"[{section}] host = {host!r} in town.toml is not an IPv4 address: use 127.0.0.1 (this machine only), "
            "0.0.0.0 (every interface) or one of this machine's IPv4 addresses"
        ) from None
    if addr.is_unspecified:
        return [bind(host, port)]
    local = bind("127.0.0.1", port)
    return [local, bind(host, local.getsockname()[1])]
