"""`gastown up` serves the dashboard: its URL is in the state file, loopback only by default, the operator's
token logs in, and `/metrics` answers; `[dashboard] enabled = false` serves none."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
from anyio.from_thread import start_blocking_portal

from gastown_mcp.config import DashboardSection, GatewaySection, ServerSection, Settings
from gastown_mcp.daemon import TownProcess
from gastown_mcp.runstate import RunState
from gastown_mcp.store import Store
from gastown_mcp.town import Town, operator


@contextmanager
def up(settings: Settings) -> Iterator[RunState]:
    process = TownProcess(settings, {})
    with start_blocking_portal() as portal:
        ready = threading.Event()
        running = portal.start_task_soon(process.run, lambda _state: ready.set())
        running.add_done_callback(lambda _future: ready.set())
        assert ready.wait(30), "the town did not start within 30 s"
        if running.done():
            running.result()
        assert process.state is not None
        try:
            yield process.state
        finally:
            portal.call(process.stop)
            running.result(timeout=30)


def configured(settings: Settings, **dashboard: object) -> Settings:
    return settings.model_copy(
        update={
            "server": ServerSection(port=0),
            "gateway": GatewaySection.model_validate({"port": 0}),
            "dashboard": DashboardSection.model_validate(dashboard),
        }
    )


def test_up_serves_the_dashboard_to_the_operator_on_loopback(settings: Settings) -> None:
    s = configured(settings)
    store = Store(s)
    token = Town(store, s).operator_token(operator())
    store.close()
    with up(s) as state:
        assert state.dashboard_url and state.dashboard_url.startswith("http://127.0.0.1:")
        with httpx2.Client(base_url=state.dashboard_url, timeout=10) as c:
            assert c.get("/board").status_code == 303
            assert c.post("/login", data={"token": token}).status_code == 303
            assert "Needs you" in c.get("/").text
            assert "gastown_beads_ready 0" in c.get("/metrics").text
        port = state.dashboard_url.rsplit(":", 1)[1]
        try:
            httpx2.get(f"http://127.0.0.2:{port}/healthz", timeout=5)
            raise AssertionError("the dashboard answered on an address other than loopback")
        except httpx2.ConnectError:
            pass


def test_a_disabled_dashboard_is_not_served(settings: Settings) -> None:
    with up(configured(settings, enabled=False)) as state:
        assert state.dashboard_url is None
