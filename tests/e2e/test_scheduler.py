"""The scheduler for real: `gastown up` with `[scheduler] auto` and `max_polecats = 3` works 12 ready beads with
dependencies through Claude Code polecats (the scripted stand-in as the model) and the merge queue, with never
more than 3 polecat containers running, sampled from the Docker engine itself, and no bead worked twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import until

from gastown_mcp import assemble
from gastown_mcp.config import load_settings
from gastown_mcp.models import Verb
from gastown_mcp.runstate import read_state
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.serving import serve_in_thread
from gastown_mcp.standin import build_standin
from gastown_mcp.standin.scripts import script_named
from gastown_mcp.town import operator

from .harness import git_repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]
GASTOWN = str(Path(sys.executable).with_name("gastown"))


@pytest.fixture
def standin_url() -> Iterator[str]:
    with serve_in_thread(build_standin(script_named("polecat")).app) as url:
        yield url


def test_twelve_ready_beads_finish_with_never_more_than_three_polecats_running(
    tmp_path: Path, docker_runtime: DockerRuntime, agent_image: str, root: None, standin_url: str
) -> None:
    town, name = tmp_path / "town", f"sc{os.getpid() % 100000}"
    subprocess.run([GASTOWN, "init", str(town), "--name", name, "--prefix", "sc"], check=True, capture_output=True)
    (town / "town.toml").write_text(
        f'[town]\nname = "{name}"\nprefix = "sc"\n'
        "[server]\nport = 0\n"
        f'[gateway]\nport = 0\ndefault_upstream = "standin"\n'
        f'[gateway.upstreams.standin]\nbase_url = "{standin_url}"\nkey_env = "STANDIN_KEY"\n'
        "[scheduler]\nauto = true\nmax_polecats = 3\nspawn_per_tick = 3\ninterval_seconds = 0.5\n"
        "[witness]\ninterval_seconds = 1\n"
    )
    settings = load_settings(town)
    op = operator()
    setup = assemble.open_town(settings)
    try:
        setup.rig_add(op, "sample", str(git_repo(tmp_path / "sample")))
        roots = [setup.bead_create(op, f"Write note {i}").id for i in range(4)]
        later = [setup.bead_create(op, f"Follow up {i}", blocked_by=[roots[i % 4]]).id for i in range(8)]
    finally:
        setup.close()

    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:  # the engine's own count of this town's running polecats, not the store's
        labels = ["--filter", f"label=gastown.town={name}", "--filter", "label=gastown.role=polecat"]
        while not stop.wait(0.2):
            out = subprocess.run(["docker", "ps", "-q", *labels], capture_output=True, text=True).stdout
            seen.append(len(out.split()))

    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [GASTOWN, "up", "--town", str(town)],
        env={**os.environ, "STANDIN_KEY": "standin-key-for-the-scheduler-test"},
        stderr=log,
    )
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    watch = assemble.open_town(settings)
    try:
        until(lambda: read_state(settings) is not None, 60, "gastown up to start")
        until(
            lambda: all(
                (b := watch.bead_show(op, bead)).status.value == "done" and not b.awaiting_merge
                for bead in roots + later
            ),
            300,
            "all 12 beads merged",
            every_s=1.0,
        )
        claims = [
            e.bead_id for e in watch.events(op, limit=100_000) if e.verb in (Verb.bead_claimed, Verb.bead_taken_over)
        ]
        assert sorted(claims) == sorted(roots + later)  # each bead claimed once: none double-worked
        log = json.dumps(watch.rig_log(op, "sample", limit=50))
        assert all(bead in log for bead in roots + later)  # every bead's commit is on main
    finally:
        stop.set()
        sampler.join(timeout=10)
        watch.close()
        subprocess.run([GASTOWN, "down", "--town", str(town)], capture_output=True, timeout=120)
        up.wait(timeout=60)
    assert seen and max(seen) <= 3, seen
    assert max(seen) == 3  # the limit was reached, so it is the limit that held the rest back
