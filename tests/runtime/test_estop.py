"""The emergency stop on the real engine: five busy agent containers are all frozen within 5 s of `estop`
(measured from Docker's own state), the gateway's admission check sees the stop, and `thaw` resumes them."""

from __future__ import annotations

import time

import pytest

from gastown_mcp.config import Settings
from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.protocol import LaunchSpec, Limits
from gastown_mcp.store import Store
from gastown_mcp.supervisor.dogs import Freezer
from gastown_mcp.town import Town, operator
from gastown_mcp.town.fleet import Fleet, FleetConfig

pytestmark = pytest.mark.docker

BUSY = "while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.05; done"


def test_estop_freezes_five_busy_polecats_within_five_seconds_and_thaw_resumes_them(
    runtime: DockerRuntime, agent_image: str, town_name: str, settings: Settings, store: Store
) -> None:
    config = FleetConfig(town=town_name, town_dir=settings.town_dir, mcp_url="http://town/mcp")
    town = Town(store, settings, Fleet(store, runtime, config))
    names = [f"polecat-{i}" for i in range(5)]
    for name in names:
        runtime.launch(
            LaunchSpec(
                town=town_name,
                agent=name,
                role="polecat",
                image=agent_image,
                command=("sh", "-c", BUSY),
                limits=Limits(),
            )
        )
    began = time.monotonic()
    town.estop(operator(), "drill")
    freezer = Freezer(town)  # what `gastown up` runs every second: it catches any container the first pass missed
    while sorted(runtime.paused(town_name)) != names and time.monotonic() - began < 10:
        freezer.tick()
        time.sleep(0.05)
    frozen_after = time.monotonic() - began
    assert sorted(runtime.paused(town_name)) == names
    assert frozen_after < 5.0
    assert town.dispatch_hold() is not None and town.frozen() is not None  # what the gateway and scheduler ask
    assert all(s.state == "running" for s in runtime.list(town_name))  # frozen, not stopped: nothing lost
    town.thaw(operator())
    assert runtime.paused(town_name) == []
    assert freezer.tick() == [] or runtime.paused(town_name) == []
    assert all(s.state == "running" for s in runtime.list(town_name))
