"""compose.yaml for real: the town server runs as a container with the Docker socket, launches a Claude Code
polecat in its own container (which sees neither the socket nor the provider key), the polecat completes its
bead, and `compose stop` shuts the town down gracefully.

The mayor is a real MCP client on the host talking to the town's HTTP port; the operator's commands run in
the town container with `compose exec`, as the README shows. The scripted stand-in plays the model on a
host port, reached by the town's gateway through the host network.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from waits import until

from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.network import remove_town_network
from gastown_mcp.runtime.protocol import LABEL_AGENT, LABEL_TOWN
from gastown_mcp.server.client import connect_http
from gastown_mcp.serving import bind, serve
from gastown_mcp.standin import build_standin
from gastown_mcp.standin.scripts import script_named

from .harness import git_repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEY = "sk-provider-" + secrets.token_hex(8)  # what the gateway sends upstream; agents must not see it


@dataclass
class ComposeTown:
    command: list[str]
    project: str
    env: dict[str, str]
    town_dir: Path
    name: str
    mcp_port: int

    def compose(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.command, "-f", str(ROOT / "compose.yaml"), "-p", self.project, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def gastown(self, *args: str) -> Any:
        """`compose exec town gastown ... --json`: the operator's CLI inside the town container."""
        return json.loads(self.compose("exec", "-T", "town", "gastown", *args, "--json").stdout)

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.mcp_port}/mcp"


def _free_ports(n: int) -> list[int]:
    socks = [bind() for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def compose_town(
    docker_runtime: DockerRuntime,
    town_image: str,
    compose_command: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ComposeTown]:
    name = "compose" + secrets.token_hex(3)
    town_dir = tmp_path_factory.mktemp("compose") / name
    mcp_port, gw_port = _free_ports(2)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serve(build_standin(script_named("polecat")).app)) as standin_url,
    ):
        subprocess.run(
            [str(ROOT / ".venv/bin/gastown"), "init", str(town_dir), "--name", name, "--prefix", "cp"],
            check=True,
            capture_output=True,
        )
        (town_dir / "town.toml").write_text(
            f'[town]\nname = "{name}"\nprefix = "cp"\n\n'
            f"[server]\nport = {mcp_port}\n\n[witness]\ninterval_seconds = 1.0\n\n"
            f'[gateway]\nport = {gw_port}\ndefault_upstream = "standin"\n\n'
            f'[gateway.upstreams.standin]\nbase_url = "{standin_url}"\nkey_env = "ANTHROPIC_API_KEY"\n'
        )
        env = {
            "PATH": os.environ["PATH"],
            "GASTOWN_TOWN_DIR": str(town_dir),
            "GASTOWN_NAME": name,
            "ANTHROPIC_API_KEY": PROVIDER_KEY,
        }
        town = ComposeTown(compose_command, name, env, town_dir, name, mcp_port)
        try:
            town.compose("up", "-d")
            until(lambda: (town_dir / "run" / "town.json").exists(), 60, "the town container to come up")
            yield town
        finally:
            logs = town.compose("logs", "--no-color", check=False).stdout
            town.compose("down", "--timeout", "60", check=False, timeout=180)
            docker_runtime.cleanup(name)
            remove_town_network(docker_runtime.client, name)
            print(logs)


async def _mayor_slings_a_bead(town: ComposeTown, token: str) -> str:
    async with connect_http(town.mcp_url, token) as mayor:
        made = await mayor.call_tool("bead_create", {"title": "Add a NOTES file", "description": "One line."})
        assert made.structured_content is not None, made.content
        bead = str(made.structured_content["id"])
        slung = await mayor.call_tool("town_sling", {"bead": bead, "to": "sample"})
        assert not slung.is_error, slung.content
        return bead


async def _bead_status(town: ComposeTown, token: str, bead: str) -> dict[str, Any]:
    async with connect_http(town.mcp_url, token) as mayor:
        shown = await mayor.call_tool("bead_show", {"id": bead})
        assert shown.structured_content is not None, shown.content
        return dict(shown.structured_content)


def test_the_town_container_runs_a_polecat_that_completes_its_bead(
    compose_town: ComposeTown, docker_runtime: DockerRuntime
) -> None:
    town = compose_town
    git_repo(town.town_dir / "src" / "sample")
    town.gastown("rig", "add", "sample", str(town.town_dir / "src" / "sample"))
    token = town.gastown("agent", "add", "mayor", "--role", "mayor")["token"]

    bead = anyio.run(_mayor_slings_a_bead, town, token)
    done = until(
        lambda: (b := anyio.run(_bead_status, town, token, bead))["status"] == "done" and b,
        180,
        f"the polecat to complete {bead}",
        every_s=1.0,
    )
    assert done["result"]["commit"] and done["result"]["branch"].startswith("refs/polecat/")  # handed in

    client = docker_runtime.client
    [town_container] = client.containers.list(filters={"label": f"com.docker.compose.project={town.project}"})
    assert "/var/run/docker.sock" in {m["Destination"] for m in town_container.attrs["Mounts"]}
    assert f"ANTHROPIC_API_KEY={PROVIDER_KEY}" in town_container.attrs["Config"]["Env"]
    polecats = client.containers.list(all=True, filters={"label": [f"{LABEL_TOWN}={town.name}", LABEL_AGENT]})
    assert polecats, "the polecat's container is gone before it could be inspected"
    for polecat in polecats:
        sources = {m.get("Source", "") for m in polecat.attrs["Mounts"]}
        assert not any(s.endswith("docker.sock") for s in sources), sources
        assert not any(PROVIDER_KEY in e for e in polecat.attrs["Config"]["Env"])
        assert polecat.attrs["HostConfig"]["NetworkMode"] == f"gastown-{town.name}"


def test_compose_stop_shuts_the_town_down_gracefully(compose_town: ComposeTown) -> None:
    town = compose_town
    # Run after the polecat test in this module: the town is up, maybe with agents.
    town.compose("stop", "--timeout", "60", timeout=180)
    logs = town.compose("logs", "--no-color").stdout
    assert "shutting down: stopping agents" in logs and "town stopped" in logs, logs
    assert not (town.town_dir / "run" / "town.json").exists()
    town.compose("start")
    until(lambda: (town.town_dir / "run" / "town.json").exists(), 60, "the town to start again")
    status = subprocess.run(
        [str(ROOT / ".venv/bin/gastown"), "status", "--town", str(town.town_dir), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout)["beads_by_status"].get("done") == 1


def test_the_town_image_can_export_traces(town_image: str) -> None:
    # `[otel] endpoint` in a compose town's town.toml needs the extra inside the image, not on the host.
    probe = "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter"
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", town_image, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
