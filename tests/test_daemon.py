"""The town process: its state file (who may signal a running town, how a town in a container is seen) and
where `gastown up` listens."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import httpx2
import pytest
from anyio.from_thread import start_blocking_portal

from gastown_mcp.config import GatewaySection, ServerSection, Settings
from gastown_mcp.daemon import (
    RunState,
    TownProcess,
    provider_env,
    read_state,
    state_path,
    stop_running_town,
)
from gastown_mcp.errors import Conflict, InvalidInput, NotFound
from gastown_mcp.runstate import pid_namespace
from gastown_mcp.server.client import connect_http
from gastown_mcp.serving import bind
from gastown_mcp.store import Store
from gastown_mcp.town import Town, operator


def write_state(settings: Settings, pid: int | None = None, namespace: str | None = None, port: int = 9) -> RunState:
    state = RunState(
        pid=os.getpid() if pid is None else pid,
        started_at=time.time(),
        mcp_url=f"http://127.0.0.1:{port}/mcp",
        gateway_url="http://127.0.0.1:9",
        pid_namespace=namespace,
    )
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(state.model_dump_json())
    return state


def test_no_state_file_means_no_town(settings: Settings) -> None:
    assert read_state(settings) is None
    with pytest.raises(NotFound, match="no running town"):
        stop_running_town(settings)


def test_a_town_in_this_pid_namespace_is_alive_while_its_process_is(settings: Settings) -> None:
    write_state(settings, namespace=pid_namespace())
    assert read_state(settings) is not None
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_state(settings, pid=gone.pid, namespace=pid_namespace())
    assert read_state(settings) is None


def test_a_town_in_a_container_is_alive_while_its_port_answers_and_is_never_signalled(settings: Settings) -> None:
    listener = bind()
    try:
        # pid 1 here would be this machine's init: a foreign namespace's pid must never be signalled.
        write_state(settings, pid=1, namespace="pid:[1]", port=listener.getsockname()[1])
        state = read_state(settings)
        assert state is not None and state.foreign
        with pytest.raises(Conflict, match="docker compose stop"):
            stop_running_town(settings)
    finally:
        listener.close()
    assert read_state(settings) is None


def test_provider_env_keeps_only_the_keys_the_gateway_names_and_drops_empty_ones(settings: Settings) -> None:
    env = {"ANTHROPIC_API_KEY": "", "HOME": "/root", "OTHER_KEY": "x"}
    assert provider_env(settings, env) == {}
    assert provider_env(settings, {**env, "ANTHROPIC_API_KEY": "sk-1"}) == {"ANTHROPIC_API_KEY": "sk-1"}


@contextlib.contextmanager
def _serving(settings: Settings) -> Iterator[RunState]:
    """`gastown up` without a container runtime, on a portal's event loop."""
    process = TownProcess(settings, {})
    with start_blocking_portal() as portal:
        ready = threading.Event()
        running = portal.start_task_soon(process.run, lambda _state: ready.set())
        running.add_done_callback(lambda _future: ready.set())  # a town that fails to start wakes us too
        assert ready.wait(30), "the town did not start within 30 s"
        if running.done():
            running.result()  # raises what stopped it
        assert process.state is not None
        try:
            yield process.state
        finally:
            portal.call(process.stop)
            running.result(timeout=30)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _status(url: str) -> int:
    return httpx2.get(url, timeout=10).status_code


@pytest.mark.parametrize(
    ("host", "reach"),
    [
        ("127.0.0.1", None),
        ("127.0.0.2", "127.0.0.2"),
        ("0.0.0.0", "127.0.0.3"),  # every interface
    ],
)
def test_up_listens_where_server_and_gateway_host_say_and_always_on_loopback(
    settings: Settings, host: str, reach: str | None
) -> None:
    configured = settings.model_copy(
        update={
            "server": ServerSection(host=host, port=0),
            "gateway": GatewaySection.model_validate({"host": host, "port": 0}),
        }
    )
    store = Store(configured)
    token = Town(store, configured).agent_add(operator(), "mayor", "mayor").token
    store.close()
    with _serving(configured) as state:
        assert _status(state.mcp_url) == 401  # the state file's loopback URLs always work
        assert _status(f"{state.gateway_url}/healthz") == 200
        mcp_port, gw_port = _port(state.mcp_url), _port(state.gateway_url)
        if reach is None:
            with pytest.raises(httpx2.ConnectError):
                _status(f"http://127.0.0.2:{mcp_port}/mcp")
        else:
            assert _status(f"http://{reach}:{mcp_port}/mcp") == 401  # served: the bearer token is what is missing
            assert _status(f"http://{reach}:{gw_port}/healthz") == 200
            if host != "0.0.0.0":  # a configured address is an accepted Host header; with 0.0.0.0, allowed_hosts
                assert anyio.run(_whoami, f"http://{reach}:{mcp_port}/mcp", token) == "mayor"


async def _whoami(url: str, token: str) -> str:
    async with connect_http(url, token) as client:
        result = await client.call_tool("town_heartbeat", {})
        assert result.structured_content is not None, result.content
        return str(result.structured_content["agent"])


def test_a_host_that_is_not_an_ipv4_address_is_refused_with_what_to_use(settings: Settings) -> None:
    configured = settings.model_copy(update={"server": ServerSection(host="town.example", port=0)})
    with pytest.raises(InvalidInput, match=r"\[server\] host = 'town.example'.*0\.0\.0\.0"), _serving(configured):
        pass
