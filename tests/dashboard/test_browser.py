"""The dashboard in a real headless Chromium: the operator logs in and watches work move, presses the emergency
stop and sees agents freeze, sees stale (not blank) panels when the town cannot be read; an agent's token
opens nothing, and a page of another site cannot make the logged-in browser act on the town."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.site import Site, docs_dir
from gastown_mcp.models import Role
from gastown_mcp.serving import serve_in_thread
from gastown_mcp.town import operator

pytestmark = pytest.mark.browser

WAIT_S = 20  # a bound on every wait for the page; nothing here is timed


def wait(driver: Any, what: Any, timeout: float = WAIT_S) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(what)


def log_in(driver: Any, site: Site, token: str | None = None, path: str = "/") -> None:
    driver.get(site.url + path)
    wait(driver, ec.presence_of_element_located((By.ID, "token")))
    driver.find_element(By.ID, "token").send_keys(token or site.token)
    driver.find_element(By.ID, "login").click()


def in_column(driver: Any, column: str, bead_id: str) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, f'#col-{column} [data-bead="{bead_id}"]'))


def shot(driver: Any, name: str) -> None:
    """Screenshots for docs/ when GASTOWN_SCREENSHOTS is set (`make screenshots`)."""
    if os.environ.get("GASTOWN_SCREENSHOTS"):
        docs_dir().mkdir(exist_ok=True)
        driver.save_screenshot(str(docs_dir() / f"dashboard-{name}.png"))


def test_the_operator_logs_in_and_sees_beads_move_as_work_progresses(site: Site, browser: Any) -> None:
    op = operator()
    town = site.town
    first = town.bead_create(op, "Add a login page", labels=["rig:web"], priority=1)
    second = town.bead_create(op, "Write the docs", blocked_by=[first.id])
    polecat = town.agent_add(op, "nux", Role.polecat.value).agent

    log_in(browser, site)
    wait(browser, ec.presence_of_element_located((By.ID, "panel-board")))
    assert in_column(browser, "ready", first.id) and in_column(browser, "waiting", second.id)
    assert "nothing needs you" in browser.find_element(By.ID, "panel-needs").text

    # The page is not reloaded from here on: the live feed and the panels' refresh move the cards.
    marker = browser.execute_script("window.__same_page = 1; return window.__same_page")
    town.bead_claim(polecat, first.id)
    wait(browser, lambda d: in_column(d, "in_progress", first.id))
    town.bead_complete(polecat, first.id, "login page added")
    wait(browser, lambda d: in_column(d, "merged", first.id) and in_column(d, "ready", second.id))
    wait(browser, lambda d: "bead.completed" in d.find_element(By.ID, "feed-list").text)
    town.block(op, second.id, "waits for the design review")
    wait(browser, lambda d: "waits for the design review" in d.find_element(By.ID, "panel-needs").text)
    assert browser.execute_script("return window.__same_page") == marker
    shot(browser, "overview")

    link = browser.find_element(By.CSS_SELECTOR, f'#col-merged [data-bead="{first.id}"] a.bead-id')
    browser.get(link.get_attribute("href"))  # (a click could land just as the panel is redrawn)
    wait(browser, ec.text_to_be_present_in_element((By.ID, "bead-status"), "done"))
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "login page added" in page and "bead.claimed" in page and "nux" in page
    shot(browser, "bead")


def test_estop_freezes_agents_and_thaw_resumes_them(site: Site, browser: Any) -> None:
    op = operator()
    names = [site.town.spawn(op, "polecat").name for _ in range(3)]
    log_in(browser, site, path="/agents")
    wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-agent="{names[0]}"]')))
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.paused")

    browser.find_element(By.ID, "estop").click()
    wait(browser, ec.text_to_be_present_in_element((By.ID, "estop-state"), "EMERGENCY STOP"))
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.paused")) == 3)
    assert sorted(site.runtime.frozen) == sorted(names)  # the containers themselves are paused
    assert site.town.frozen() is not None and site.town.frozen()["by"] == "operator"
    shot(browser, "estop")

    browser.find_element(By.ID, "thaw").click()
    wait(browser, ec.text_to_be_present_in_element((By.ID, "estop-state"), "running"))
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "tr.paused"))
    assert site.runtime.frozen == set() and site.town.frozen() is None


def test_a_forced_data_failure_shows_the_last_data_marked_stale(site: Site, browser: Any) -> None:
    bead = site.town.bead_create(operator(), "Visible before the failure")
    log_in(browser, site, path="/board")
    wait(browser, lambda d: in_column(d, "ready", bead.id))

    site.town.broken = True  # every read of the town fails from now on
    board = browser.find_element(By.CSS_SELECTOR, "#panel-board .panel-body")
    wait(browser, lambda d: "stale" in board.get_attribute("class"))
    banner = board.find_element(By.CSS_SELECTOR, ".stale-banner").text
    assert banner.startswith("stale: showing data from") and "disk I/O error" in banner
    assert in_column(browser, "ready", bead.id)  # the last data, not a blank panel
    assert "Traceback" not in browser.page_source
    shot(browser, "stale")

    # A page loaded while the town cannot be read says so in each panel instead of failing.
    browser.get(site.url + "/spend")
    spend = wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "#panel-spend .stale-banner")))
    assert spend.text.startswith(("unavailable", "stale"))

    site.town.broken = False
    browser.get(site.url + "/board")
    board = wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "#panel-board .panel-body")))
    wait(
        browser, lambda d: in_column(d, "ready", bead.id) and not board.find_elements(By.CSS_SELECTOR, ".stale-banner")
    )


def test_an_open_overview_fetches_nothing_while_the_town_is_quiet_and_redraws_on_a_write(
    site: Site, browser: Any
) -> None:
    log_in(browser, site)
    wait(browser, ec.presence_of_element_located((By.ID, "panel-board")))
    browser.execute_script(
        """window.__fetched = [];
        const fetch0 = window.fetch;
        window.fetch = (url, ...rest) => { window.__fetched.push(String(url)); return fetch0(url, ...rest); };"""
    )
    time.sleep(3)  # three of this site's refresh periods (1 s): a page that polled would have fetched by now
    assert browser.execute_script("return window.__fetched") == []
    bead = site.town.bead_create(operator(), "a write wakes the page")
    wait(browser, lambda d: in_column(d, "ready", bead.id))
    assert "/panel/board" in browser.execute_script("return window.__fetched")


def test_an_agent_token_does_not_open_the_dashboard(site: Site, browser: Any) -> None:
    op = operator()
    for role in ("mayor", "overseer"):
        creds = site.town.agent_add(op, f"an-{role}", role)
        log_in(browser, site, token=creds.token)
        alert = wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "[role=alert]")))
        assert "not the operator's dashboard token" in alert.text
        browser.get(site.url + "/board")
        wait(browser, ec.presence_of_element_located((By.ID, "token")))  # still the login page
        assert "/login" in browser.current_url


def test_a_cross_site_post_is_refused(site: Site, browser: Any) -> None:
    """A page on another site, opened in the operator's logged-in browser, posts the estop form."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    port = site.url.rsplit(":", 1)[1]
    evil = (
        f"<!doctype html><form id=f method=post action='http://127.0.0.1:{port}/act/estop'>"
        "<input name=reason value=pwned><input name=csrf value=guess></form>"
        "<script>document.getElementById('f').submit()</script>"
    )

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse(evil)

    log_in(browser, site)
    wait(browser, ec.presence_of_element_located((By.ID, "estop")))
    with serve_in_thread(Starlette(routes=[Route("/", page)])) as other:
        browser.get(other.replace("127.0.0.1", "localhost") + "/")  # another site: localhost, not 127.0.0.1
        wait(browser, lambda d: "/act/estop" in d.current_url)
        assert "refused" in browser.page_source or "log in first" in browser.page_source
    assert site.town.frozen() is None
    browser.get(site.url + "/")
    wait(browser, ec.text_to_be_present_in_element((By.ID, "estop-state"), "running"))


@pytest.mark.parametrize("page", ["/agents", "/merges", "/convoys", "/spend", "/feed"])
def test_every_page_renders_without_errors(site: Site, browser: Any, page: str) -> None:
    log_in(browser, site, path=page)
    wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, ".panel")))
    assert "Traceback" not in browser.page_source and "unavailable" not in browser.page_source
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []
