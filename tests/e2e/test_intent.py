"""The town runs itself, as a new user drives it: `gastown up` in its own process; a mayor over stdio
(`gastown serve --as mayor`) and another over `gastown serve --http` sling beads, with no runtime in their
processes; Claude Code polecats (the scripted stand-in as the model) complete them; `gastown down` leaves no
container and no network behind. Real processes, real Docker, real MCP clients.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from waits import until

from gastown_mcp import assemble
from gastown_mcp.config import load_settings
from gastown_mcp.runstate import read_state
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.server.client import connect_http, result_text
from gastown_mcp.serving import bind, serve_in_thread
from gastown_mcp.standin import build_standin
from gastown_mcp.standin.scripts import script_named
from gastown_mcp.town import operator

from .harness import git_repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]
GASTOWN = str(Path(sys.executable).with_name("gastown"))


def gastown(town: Path, *args: str) -> str:
    where = [] if args[0] == "init" else ["--town", str(town)]
    done = subprocess.run([GASTOWN, *args, *where], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def standin_url() -> Iterator[str]:
    with serve_in_thread(build_standin(script_named("polecat")).app) as url:
        yield url


async def _sling(client: Client, bead: str) -> None:
    with anyio.fail_after(60):
        result = await client.call_tool("town_sling", {"bead": bead, "to": "sample"})
    assert not result.is_error, result_text(result)
    assert result.structured_content is not None and result.structured_content["state"] in ("requested", "running")


def test_mayors_over_stdio_and_http_sling_while_gastown_up_runs_and_gastown_down_leaves_nothing(
    tmp_path: Path, docker_runtime: DockerRuntime, agent_image: str, root: None, standin_url: str
) -> None:
    town = tmp_path / "town"
    name = f"it{os.getpid() % 100000}"
    gastown(town, "init", str(town), "--name", name, "--prefix", "it")
    with (town / "town.toml").open("a") as f:
        f.write(
            f'\n[gateway]\nport = 0\ndefault_upstream = "standin"\n'
            f'[gateway.upstreams.standin]\nbase_url = "{standin_url}"\nkey_env = "STANDIN_KEY"\n'
            "[server]\nport = 0\n"
        )
    toml = (town / "town.toml").read_text().replace('[server]\nhost = "127.0.0.1"\nport = 8765\n', "")
    (town / "town.toml").write_text(toml)
    gastown(town, "rig", "add", "sample", str(git_repo(tmp_path / "sample")))
    token = json.loads(gastown(town, "agent", "add", "mayor", "--role", "mayor", "--json"))["token"]
    beads = [json.loads(gastown(town, "bead", "create", f"Write note {i}", "--json"))["id"] for i in (1, 2)]

    env = {**os.environ, "STANDIN_KEY": "standin-key"}
    up = subprocess.Popen([GASTOWN, "up", "--town", str(town)], env=env, stderr=subprocess.DEVNULL)
    http_sock = bind()
    http_port = http_sock.getsockname()[1]
    http_sock.close()
    serve_http = subprocess.Popen([GASTOWN, "serve", "--http", "--port", str(http_port), "--town", str(town)])
    try:
        settings = load_settings(town)
        until(lambda: read_state(settings) is not None, 60, "gastown up to start")
        second = subprocess.run([GASTOWN, "up", "--town", str(town)], capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "already running" in second.stderr  # one town per directory

        async def drive() -> None:
            stdio = StdioServerParameters(command=GASTOWN, args=["serve", "--town", str(town), "--as", "mayor"])
            async with Client(stdio) as mayor:
                await _sling(mayor, beads[0])
            until(lambda: _listening(http_port), 30, "gastown serve --http to listen")
            async with connect_http(f"http://127.0.0.1:{http_port}/mcp", token) as mayor:
                await _sling(mayor, beads[1])

        anyio.run(drive)
        op = operator()
        watch = assemble.open_town(settings)
        try:
            until(
                lambda: all(watch.bead_show(op, b).status.value == "done" for b in beads),
                180,
                "both beads done by polecats started by the town",
            )
            polecats = watch.agents(op, "polecat")
            assert len(polecats) == 2 and all(a.metadata.get("generation") == 1 for a in polecats)
        finally:
            watch.close()
    finally:
        serve_http.send_signal(signal.SIGTERM)
        serve_http.wait(timeout=30)
        gastown(town, "down")
        up.wait(timeout=60)
    labels = f"label=gastown.town={name}"
    containers = subprocess.run(["docker", "ps", "-aq", "--filter", labels], capture_output=True, text=True)
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", labels], capture_output=True, text=True)
    assert containers.stdout.strip() == "" and networks.stdout.strip() == ""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
