"""A town with a dashboard served on loopback, and a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) to use it. The town has a runtime of fakes (containers as a dict), so
agents can be spawned, frozen and stopped without an engine; `FlakyTown` fails every read on demand."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from fakes import FakeRuntime

from dashboard.site import FlakyTown, Site
from gastown_mcp.config import DashboardSection, Settings
from gastown_mcp.dashboard import build_dashboard
from gastown_mcp.serving import bind, serve_in_thread
from gastown_mcp.store import Store
from gastown_mcp.town import operator
from gastown_mcp.town.fleet import Fleet, FleetConfig

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


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
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gastown-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome_binaries[0]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chrome_binaries[1]), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
