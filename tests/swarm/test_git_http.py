"""Repositories over git smart HTTP (githttp.py, town/workspaces.py) with the real git client against the
town's endpoint served by uvicorn: an agent launched with an HTTP workspace clones its own repository with its
token, pushes its branch, and completes its bead through the ordinary checked hand-in; everything else is
refused. No container: the runtime is a recording fake, since this is about the town's side.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import git_repo
from fakes import FakeRuntime

from gastown_mcp import rigs
from gastown_mcp.config import Settings
from gastown_mcp.githttp import with_git
from gastown_mcp.models import Agent, Role
from gastown_mcp.runtime.protocol import ContainerStatus, LaunchSpec
from gastown_mcp.serving import serve_in_thread
from gastown_mcp.store import Store
from gastown_mcp.town import Fleet, FleetConfig, Town, operator
from gastown_mcp.town.workspaces import check_push

OP = operator()
GIT = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


class RecordingRuntime(FakeRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.specs: list[LaunchSpec] = []

    def launch(self, spec: LaunchSpec) -> ContainerStatus:
        self.specs.append(spec)
        return super().launch(spec)


async def not_found(scope: Any, receive: Any, send: Any) -> None:
    """Stands in for the MCP app: only the lifespan reaches it, never a request under /git/."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    raise AssertionError(f"the MCP app got {scope.get('path')}")


@dataclass
class Served:
    town: Town
    runtime: RecordingRuntime
    url: str
    tokens: dict[str, str]
    beads: dict[str, str]

    def agent(self, name: str) -> Agent:
        return self.town.agent(name)


def git(*args: str, cwd: Path, token: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    auth = ["-c", f"http.extraHeader=Authorization: Bearer {token}"] if token else []
    ident = ["-c", "user.name=agent", "-c", "user.email=agent@example.invalid"]
    done = subprocess.run(["git", *auth, *ident, *args], cwd=cwd, capture_output=True, text=True, env=GIT, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {done.stderr}")
    return done


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings.model_validate({"town_dir": tmp_path / "town"})
    settings.town_dir.mkdir()
    store = Store(settings)
    runtime = RecordingRuntime()
    rigs.add_rig(settings.town_dir, "sample", str(git_repo(tmp_path / "sample")))
    town = Town(store, settings)
    with serve_in_thread(with_git(not_found, town)) as url:
        config = FleetConfig(town="town", town_dir=settings.town_dir, mcp_url=f"{url}/mcp", git_url=f"{url}/git")
        town._fleet = Fleet(store, runtime, config)
        tokens, beads = {}, {}
        for name in ("nux", "slit"):
            beads[name] = town.bead_create(OP, f"Work of {name}").id
            town.spawn(OP, "polecat", rig="sample", bead=beads[name])
            # The launch rotated the credentials; the fake container's token is in its spec's environment.
            tokens[name] = runtime.specs[-1].env["GASTOWN_TOKEN"]
        yield Served(town, runtime, url, tokens, beads)
    store.close()


def test_an_agent_on_another_machine_gets_no_mounts_but_a_git_url(served: Served) -> None:
    spec = served.runtime.specs[0]
    assert spec.mounts == ()
    assert spec.env["GASTOWN_GIT_URL"] == f"{served.url}/git/{spec.agent}.git"
    assert served.agent(spec.agent).metadata["workspace"] == "http"


def test_an_agent_clones_pushes_its_branch_and_completes_through_the_checked_hand_in(
    served: Served, tmp_path: Path
) -> None:
    meta = served.agent("nux").metadata
    work = tmp_path / "nux"
    git("clone", "-q", "--branch", meta["branch"], f"{served.url}/git/nux.git", str(work), cwd=tmp_path,
        token=served.tokens["nux"])  # fmt: skip
    (work / "nux.md").write_text("done\n")
    git("add", ".", cwd=work)
    git("commit", "-qm", f"{served.beads['nux']}: notes", cwd=work)
    git("push", "-q", "origin", meta["branch"], cwd=work, token=served.tokens["nux"])
    agent = served.agent("nux")
    served.town.bead_claim(agent, served.beads["nux"])
    bead = served.town.bead_complete(agent, served.beads["nux"], "notes written")
    assert bead.awaiting_merge
    pushed = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert served.town.merge_list(OP)[0].tip == pushed


def test_pushes_outside_the_agents_own_branches_are_refused(served: Served, tmp_path: Path) -> None:
    work = tmp_path / "nux"
    token = served.tokens["nux"]
    git("clone", "-q", "--branch", served.agent("nux").metadata["branch"], f"{served.url}/git/nux.git", str(work),
        cwd=tmp_path, token=token)  # fmt: skip
    git("commit", "-q", "--allow-empty", "-m", "sneaky", cwd=work)
    for target in ("HEAD:refs/heads/main", "HEAD:refs/heads/polecat/slit/x", "HEAD:refs/tags/v1"):
        done = git("push", "-q", "origin", target, cwd=work, token=token, check=False)
        assert done.returncode != 0 and "403" in done.stderr, (target, done.stderr)
    rig = rigs.get_rig(served.town.settings.town_dir, "sample")
    assert git("rev-parse", "main", cwd=rig.repo).stdout == git("rev-parse", "origin/main", cwd=work).stdout


def test_an_agent_cannot_read_another_agents_repository_and_no_token_gets_401(served: Served, tmp_path: Path) -> None:
    url = f"{served.url}/git/slit.git"
    other = git("clone", "-q", url, str(tmp_path / "a"), cwd=tmp_path, token=served.tokens["nux"], check=False)
    assert other.returncode != 0 and "403" in other.stderr
    anonymous = git("clone", "-q", url, str(tmp_path / "b"), cwd=tmp_path, check=False)
    assert anonymous.returncode != 0
    revoked = served.tokens["slit"]
    served.town.stop(OP, "slit", "done")
    gone = git("clone", "-q", url, str(tmp_path / "c"), cwd=tmp_path, token=revoked, check=False)
    # A 401 with a challenge: git asks for credentials, and with prompts off it gives up.
    assert gone.returncode != 0 and "could not read Username" in gone.stderr, gone.stderr
    assert not (tmp_path / "c").exists()


def test_the_push_check_reads_every_command() -> None:
    def pkt(text: bytes) -> bytes:
        return f"{len(text) + 4:04x}".encode() + text

    ok = pkt(b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/polecat/nux/gt-1\0report-status") + b"0000PACK"
    assert check_push("nux", ok) == ["refs/heads/polecat/nux/gt-1"]
    two = ok[:-8] + pkt(b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/main") + b"0000"
    with pytest.raises(Exception, match="only its own branches"):
        check_push("nux", two)
    delete = pkt(b"1" * 40 + b" " + b"0" * 40 + b" refs/heads/polecat/nux/gt-1") + b"0000"
    with pytest.raises(Exception, match="may not delete"):
        check_push("nux", delete)
    with pytest.raises(Exception, match="pkt-line"):
        check_push("nux", b"zzzz")


def test_a_mounted_agents_repository_is_never_served(tmp_path: Path) -> None:
    settings = Settings.model_validate({"town_dir": tmp_path / "town"})
    settings.town_dir.mkdir()
    store = Store(settings)
    try:
        rigs.add_rig(settings.town_dir, "sample", str(git_repo(tmp_path / "sample")))
        runtime = RecordingRuntime()
        town = Town(store, settings, Fleet(store, runtime, FleetConfig("town", settings.town_dir, "http://x/mcp")))
        bead = town.bead_create(OP, "local work").id
        town.spawn(OP, Role.polecat.value, rig="sample", bead=bead)
        name = runtime.specs[0].agent
        assert runtime.specs[0].mounts  # the local way: its repository is bind-mounted
        with pytest.raises(Exception, match="no repository served over the network"):
            town.workspace_git(town.agent(name), name, "git-upload-pack", None)
    finally:
        store.close()
