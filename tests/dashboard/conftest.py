"""A town with a dashboard served on loopback, and a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) to use it. The town has a runtime of fakes (containers as a dict), so
agents can be spawned, frozen and stopped without an engine; `FlakyTown` fails every read on demand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser import CHROMEDRIVER, CHROMIUM, headless_chromium
from fakes import FakeRuntime

from dashboard.site import FlakyTown, Site
from gastown_mcp.config import DashboardSection, Settings
from gastown_mcp.dashboard import build_dashboard
from gastown_mcp.serving import bind, serve_in_thread
from gastown_mcp.store import Store
from gastown_mcp.town import operator
from gastown_mcp.town.fleet import Fleet, FleetConfig


@pytest.fixture
def site(settings: Settings, store: Store) -> Iterator[Site]:
    runtime = FakeRuntime()
    config = FleetConfig(town="town", town_dir=settings.town_dir, mcp_url="http://127.0.0.1:1/mcp")
    town = FlakyTown(store, settings, Fleet(store, runtime, config))
    sock = bind("127.0.0.1")
    port = sock.getsockname()[1]
    dash = DashboardSection(refresh_seconds=1)
    app = build_dashboard(town, dash, [f"127.0.0.1:{port}", f"localhost:{port}"])
    token = town.operator_token(operator())
    with serve_in_thread(app, sock) as url:
        yield Site(url, town, runtime, token)


@pytest.fixture(scope="session")
def chrome_binaries() -> tuple[str, str]:
    if not CHROMIUM or not CHROMEDRIVER:
        import os

        reason = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def browser(chrome_binaries: tuple[str, str]) -> Iterator[object]:
    with headless_chromium(*chrome_binaries, page_load_timeout=30) as driver:
        yield driver
