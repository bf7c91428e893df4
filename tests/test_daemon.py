"""The town process's state file: who may signal a running town, and how a town in a container is seen."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from gastown_mcp.config import Settings
from gastown_mcp.daemon import RunState, pid_namespace, provider_env, read_state, state_path, stop_running_town
from gastown_mcp.errors import Conflict, NotFound
from gastown_mcp.standin.serving import bind


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
