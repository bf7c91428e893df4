"""The built wheel works outside the source tree: installed into a fresh virtual environment in a directory
that is no checkout, its `gastown` command makes a town and serves the role prompts (package data) over MCP.

The fresh environment borrows the dependencies of this one through a `.pth` line (no download, no editable
install: that directory's own `.pth` files are not read), so what runs is the wheel's copy of gastown_mcp.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv, outside the checkout, with the project's wheel installed; yields its bin/ directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, ROOT, cwd=tmp)
    (wheel,) = wheels.glob("gastown_mcp-*.whl")
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin/python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=tmp)
    return venv / "bin"


def test_the_installed_wheel_is_the_code_that_runs_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run(installed / "python", "-c", "import gastown_mcp; print(gastown_mcp.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(installed.parent)
    assert _run(installed / "gastown", "--version", cwd=tmp_path).startswith("gastown ")


async def test_the_installed_gastown_makes_a_town_and_serves_every_role_prompt(installed: Path, tmp_path: Path) -> None:
    env = {"PATH": f"{installed}:/usr/bin:/bin", "HOME": str(tmp_path)}
    town = tmp_path / "town"
    _run("gastown", "init", str(town), "--name", "fresh", env=env, cwd=tmp_path)
    added = json.loads(_run("gastown", "agent", "add", "boss", "--role", "overseer", "--json", env=env, cwd=town))
    assert added["agent"]["role"] == "overseer"

    server = StdioServerParameters(
        command=str(installed / "gastown"), args=["serve", "--as", "boss"], cwd=town, env=env
    )
    texts = {}
    with anyio.fail_after(60):
        async with Client(server) as client:
            for prompt in (await client.list_prompts()).prompts:
                got = await client.get_prompt(prompt.name)
                texts[prompt.name] = "".join(getattr(m.content, "text", "") for m in got.messages)
    shipped = {p.stem: p.read_text() for p in (ROOT / "gastown_mcp/prompts").glob("*.md")}
    assert set(texts) == set(shipped)
    assert all(shipped[name].strip() in texts[name] for name in shipped)
