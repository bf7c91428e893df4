"""`gastown route list|add|remove`, `gastown model serve`, what `gastown up` says about upstreams at start, and
the last model error in `agent ls`/`status` and upstreams in `usage`: the CLI against a real town on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner, Result
from waits import until

from gastown_mcp.cli import build_app
from gastown_mcp.config import load_settings
from gastown_mcp.errors import GastownError
from gastown_mcp.gateway import localmodel
from gastown_mcp.models import Role
from gastown_mcp.serving import bind
from gastown_mcp.store import Store
from gastown_mcp.town import Town, operator
from gastown_mcp.town.budgets import Reservation, Usage

GASTOWN = str(Path(sys.executable).with_name("gastown"))
LOCAL = (
    '\n[gateway.upstreams.local]\nbase_url = "http://127.0.0.1:{port}"\nkey_file = "run/local-model.key"\n'
    'auth = "bearer"\n'
)


@pytest.fixture
def town_dir(tmp_path: Path) -> Path:
    path = tmp_path / "town"
    result = CliRunner().invoke(build_app(), ["init", str(path), "--name", "routes", "--prefix", "rt"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def gt(town_dir: Path) -> Any:
    def invoke(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
        merged = {"GASTOWN_TOWN": "", "COLUMNS": "200", "ANTHROPIC_API_KEY": "", **(env or {})}
        result = CliRunner().invoke(build_app(), [*args, "--town", str(town_dir)], env=merged)
        assert result.exit_code == code, f"{args}: {result.stdout}{result.stderr}"
        return result

    return invoke


def _add_local(town_dir: Path, port: int = 8767) -> None:
    with (town_dir / "town.toml").open("a") as f:
        f.write(LOCAL.format(port=port))


def test_route_add_list_remove_through_the_cli(gt: Any, town_dir: Path) -> None:
    [default] = json.loads(gt("route", "list", "--json").stdout)
    assert default == {
        "source": "default",
        "agent": "*",
        "model": "*",
        "upstream": "anthropic",
        "base_url": "https://api.anthropic.com",
        "key": "missing ($ANTHROPIC_API_KEY)",
    }
    assert json.loads(gt("route", "list", "--json", env={"ANTHROPIC_API_KEY": "sk-x"}).stdout)[0]["key"] == "set"
    refused = gt("route", "add", "local", "--model", "smollm*", code=2)
    assert "[gateway.upstreams.local]" in refused.stderr and "anthropic" in refused.stderr

    _add_local(town_dir)
    added = json.loads(gt("route", "add", "local", "--model", "smollm*", "--agent", "polecat-*", "--json").stdout)
    assert added == {"source": "runtime", "agent": "polecat-*", "model": "smollm*", "upstream": "local"}
    rows = json.loads(gt("route", "list", "--json").stdout)
    assert [(r["source"], r["upstream"], r["key"]) for r in rows] == [
        ("runtime", "local", "missing (key file run/local-model.key)"),
        ("default", "anthropic", "missing ($ANTHROPIC_API_KEY)"),
    ]
    (town_dir / "run").mkdir(exist_ok=True)
    (town_dir / "run" / "local-model.key").write_text("gtl-0123456789abcdef0123\n")
    assert json.loads(gt("route", "list", "--json").stdout)[0]["key"] == "set"
    assert "polecat-*" in gt("route", "list").stdout

    gt("route", "remove", "--model", "smollm*", "--agent", "polecat-*")
    assert [r["source"] for r in json.loads(gt("route", "list", "--json").stdout)] == ["default"]
    gone = gt("route", "remove", "--model", "smollm*", "--agent", "polecat-*", code=3)
    assert "no runtime route" in gone.stderr and "gastown route list" in gone.stderr


def test_agent_ls_status_and_usage_show_the_last_model_error_and_the_upstreams(gt: Any, town_dir: Path) -> None:
    settings = load_settings(town_dir)
    store = Store(settings)
    try:
        town = Town(store, settings)
        town.agent_add(operator(), "polecat-1", Role.polecat.value)
        ok = Reservation(id=None, agent="polecat-1", rig=None, model="smollm2-135m", tokens=0, usd=0.0)
        town.budgets.settle(ok, Usage(input_tokens=30, output_tokens=8), upstream="local")
        for _ in range(2):
            town.budgets.refused(
                "polecat-1", None, "claude-haiku-4-5", 503, outcome="error", upstream="anthropic", error="no key"
            )
    finally:
        store.close()
    [agent] = json.loads(gt("agent", "ls", "--json").stdout)
    assert agent["name"] == "polecat-1" and agent["model_error"]["failures"] == 2
    assert agent["model_error"]["error"] == "no key" and agent["model_error"]["upstream"] == "anthropic"
    assert "2x 503: no key" in gt("agent", "ls").stdout
    status = gt("status", "--json")
    assert [e["agent"] for e in json.loads(status.stdout)["model_errors"]] == ["polecat-1"]
    assert "model calls failing polecat-1: 2x 503: no key" in gt("status").stdout
    [usage] = json.loads(gt("usage", "--json").stdout)
    assert usage["upstreams"] == ["anthropic", "local"] and usage["requests"] == 3
    assert "anthropic, local" in gt("usage").stdout


def test_up_says_where_each_route_goes_and_warns_loudly_of_a_missing_key(town_dir: Path, tmp_path: Path) -> None:
    ports = [bind() for _ in range(2)]
    mcp_port, gw_port = (s.getsockname()[1] for s in ports)
    for s in ports:
        s.close()
    toml = (town_dir / "town.toml").read_text().replace("port = 8765", f"port = {mcp_port}")
    (town_dir / "town.toml").write_text(toml + f"\n[gateway]\nport = {gw_port}\n" + LOCAL.format(port=1))
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen([GASTOWN, "up", "--no-runtime", "--town", str(town_dir)], env=env, stderr=out)
    try:
        text = until(lambda: "warning:" in log.read_text() and log.read_text(), 60, "gastown up to print its routes")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(30)
    flat = " ".join(text.split())
    assert "routes every agent, every model -> anthropic (https://api.anthropic.com, key missing" in flat
    assert "warning: upstream anthropic has no key: $ANTHROPIC_API_KEY is not set" in flat
    assert "gastown route add" in flat and "warning: upstream local" not in flat  # no route uses local


def test_model_serve_refuses_settings_it_cannot_serve(gt: Any, town_dir: Path) -> None:
    missing = gt("model", "serve", "--server", str(town_dir / "nope"), code=3)
    assert "does not exist" in missing.stderr
    with (town_dir / "town.toml").open("a") as f:
        f.write('\n[gateway.upstreams.far]\nbase_url = "http://10.1.2.3:8767"\nkey_file = "run/k"\n')
        f.write('\n[gateway.upstreams.keyed]\nbase_url = "http://127.0.0.1:8767"\nkey_env = "SOME_KEY"\n')
    assert "binds 127.0.0.1 only" in gt("model", "serve", "--upstream", "far", code=2).stderr
    assert "has no key_file" in gt("model", "serve", "--upstream", "keyed", code=2).stderr


def test_model_serve_says_when_this_cpu_cannot_run_the_installed_server(
    gt: Any, town_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n")  # AMD Zen 4
    assert localmodel.cpu_lacks(cpuinfo=cpuinfo) == ["avx_vnni"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx_vnni amx_tile\n")
    assert localmodel.cpu_lacks(cpuinfo=cpuinfo) == []
    assert localmodel.cpu_lacks(cpuinfo=tmp_path / "absent") == []  # cannot tell: let it try
    server, native, model = tmp_path / "llama-server", tmp_path / "llama-server-native", tmp_path / "model.gguf"
    for path in (server, native, model):
        path.write_text("")
    built: dict[str, Path] = {"llama-server-vulkan": server}
    monkeypatch.setattr(localmodel, "find_server", lambda name="llama-server-vulkan": built.get(name))
    monkeypatch.setattr(localmodel, "find_model", lambda: model)
    monkeypatch.setattr(localmodel, "cpu_lacks", lambda: ["avx_vnni"])
    refused = " ".join(gt("model", "serve", code=3).stderr.split())
    assert "avx_vnni instructions, which this CPU lacks" in refused
    assert "make localmodel-native" in refused and "--server" in refused
    assert localmodel.locate(server=server) == (server, model)  # one's own build is not second-guessed
    built[localmodel.NATIVE_SERVER] = native  # `make localmodel-native` built one for this CPU: it is used
    assert localmodel.locate() == (native, model)
    monkeypatch.setattr(localmodel, "cpu_lacks", lambda: [])
    assert localmodel.locate() == (server, model)  # where the pinned build runs, it is the one used


def test_a_model_server_that_dies_of_an_illegal_instruction_is_named_for_it(tmp_path: Path) -> None:
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    spec = localmodel.LocalModel(Path(sys.executable), tmp_path / "m.gguf", tmp_path / "key", port=port)
    dies = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"])
    with pytest.raises(GastownError, match=r"illegal instruction \(SIGILL\).*make localmodel-native.*--server PATH"):
        localmodel.wait_ready(spec, dies, timeout=60)


@pytest.mark.localmodel
def test_model_serve_runs_a_keyed_local_server_until_it_is_stopped(town_dir: Path, tmp_path: Path) -> None:
    try:
        localmodel.locate()
    except Exception as exc:
        pytest.skip(str(exc))
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    _add_local(town_dir, port)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serving = subprocess.Popen([GASTOWN, "model", "serve", "--town", str(town_dir)], stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: "Ctrl-C stops it" in log.read_text(), 90, "gastown model serve to report it is ready")
        key_file = town_dir / "run" / "local-model.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        body = {"model": "x", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx2.post(f"{url}/v1/messages", json=body, timeout=30).status_code == 401
        key = key_file.read_text().strip()
        answer = httpx2.post(f"{url}/v1/messages", json=body, headers={"x-api-key": key}, timeout=30)
        assert answer.status_code == 200 and answer.json()["usage"]["output_tokens"] > 0
    finally:
        serving.send_signal(signal.SIGTERM)
        assert serving.wait(30) == 0
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{url}/health", timeout=5)
