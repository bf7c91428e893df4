"""The dashboard over real HTTP (uvicorn on loopback, an HTTP client): who may in, what every action refuses
without its CSRF token or from another origin, the actions themselves, the live feed and `/metrics`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx2
import pytest

from dashboard.site import Site
from gastown_mcp.models import Role
from gastown_mcp.town import operator


def csrf_of(c: httpx2.Client) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', c.get("/").text)
    assert found
    return found.group(1)


def test_without_a_login_pages_redirect_and_fragments_actions_and_the_feed_are_refused(site: Site) -> None:
    c = site.client()
    assert c.get("/board").status_code == 303 and c.get("/board").headers["location"].startswith("/login")
    assert c.get("/panel/board").status_code == 401
    assert c.get("/live").status_code == 401
    assert c.post("/act/estop", data={"reason": "x"}).status_code == 401
    assert site.town.frozen() is None


def test_agent_tokens_and_bearer_headers_never_open_it(site: Site) -> None:
    creds = site.town.agent_add(operator(), "mayor", Role.mayor.value)
    c = site.client()
    assert c.post("/login", data={"token": creds.token}).status_code == 401
    assert c.get("/board", headers={"Authorization": f"Bearer {creds.token}"}).status_code == 303
    assert c.get("/board", headers={"Authorization": f"Bearer {site.token}"}).status_code == 303  # form login only


def test_a_new_operator_token_retires_the_old_one(site: Site) -> None:
    newer = site.town.operator_token(operator())
    c = site.client()
    assert c.post("/login", data={"token": site.token}).status_code == 401
    assert c.post("/login", data={"token": newer}).status_code == 303


def test_actions_need_the_sessions_csrf_token_and_a_same_origin_request(site: Site) -> None:
    c = site.login()
    csrf = csrf_of(c)
    assert c.post("/act/estop", data={"reason": "x"}).status_code == 403
    assert c.post("/act/estop", data={"reason": "x", "csrf": "wrong"}).status_code == 403
    evil = {"Origin": "http://evil.test"}
    assert c.post("/act/estop", data={"csrf": csrf}, headers=evil).status_code == 403
    assert c.post("/act/estop", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert site.town.frozen() is None
    ok = c.post("/act/estop", data={"csrf": csrf, "reason": "drill"}, headers={"Origin": site.url})
    assert ok.status_code == 303 and site.town.frozen() is not None
    other = site.login()  # another session's token does not work here
    assert other.post("/act/thaw", data={"csrf": csrf}).status_code == 403


def test_an_unknown_host_header_is_refused(site: Site) -> None:
    c = site.client()
    assert c.get("/login", headers={"Host": "attacker.test"}).status_code == 421
    assert c.get("/metrics", headers={"Host": "attacker.test"}).status_code == 421


def test_each_action_goes_through_the_town_and_is_in_the_audit_trail(site: Site) -> None:
    town, op = site.town, operator()
    polecat = town.spawn(op, "polecat")
    bead = town.bead_create(op, "work")
    town.bead_claim(town.agent(polecat.name), bead.id)
    c = site.login()
    csrf = csrf_of(c)

    def act(name: str, **form: str) -> str:
        r = c.post(f"/act/{name}", data={"csrf": csrf, "next": "/board", **form})
        assert r.status_code == 303 and r.headers["location"] == "/board"
        return c.get("/board").text

    assert "nudged" in act("nudge", agent=polecat.name, text="finish the tests")
    assert town.nudges(op, polecat.name)[0].body == "finish the tests"
    act("release", bead=bead.id, reason="operator takes it back")
    assert town.bead_show(op, bead.id).status.value == "open"
    act("block", bead=bead.id, reason="waits on a key")
    assert town.bead_show(op, bead.id).status.value == "blocked"
    act("unblock", bead=bead.id)
    assert town.bead_show(op, bead.id).status.value == "open"
    act("budget", scope="town", usd="12.5", tokens="1000000")
    assert town.budget(op, "town")[0].usd_limit == 12.5
    act("stop", agent=polecat.name)
    assert town.agent(polecat.name).state.value == "exited"
    page = act("block", bead=bead.id, reason="")  # refused by the town: the message is shown, nothing changes
    assert "is missing" in page and town.bead_show(op, bead.id).status.value == "open"
    verbs = [e.verb for e in town.events(op, limit=500) if e.actor == "operator"]
    for verb in ("nudge.sent", "bead.released", "bead.blocked", "bead.reopened", "budget.set", "agent.exited"):
        assert verb in verbs


def test_the_board_filters_and_pages(site: Site) -> None:
    op = operator()
    for i in range(120):
        site.town.bead_create(op, f"task {i:03}", labels=["rig:web" if i % 2 else "rig:api"], priority=i % 3)
    c = site.login()
    page2 = c.get("/board", params={"column": "ready", "rig": "web", "page": "2"}).text
    assert "page 2 of 2" in page2 and page2.count('class="card p') == 10
    assert "task 001" not in c.get("/board", params={"column": "ready", "rig": "api"}).text
    found = c.get("/panel/board", params={"q": "task 007"}).text
    assert found.count('class="card p') == 1
    bad = c.get("/panel/board", params={"priority": "high"})
    assert bad.status_code == 200 and "not a number" in bad.text and "stale" not in bad.text


def test_the_live_feed_streams_new_events_as_server_sent_events(site: Site) -> None:
    c = site.login()
    start = site.town.last_event_id(operator())
    with c.stream("GET", "/live", params={"after": str(start)}, timeout=20) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        bead = site.town.bead_create(operator(), "arrives live")
        seen, deadline = "", time.monotonic() + 30  # keep-alives come every few seconds: bound the wait
        for line in r.iter_lines():
            seen += line + "\n"
            if bead.id in line or time.monotonic() > deadline:
                break
    assert "event: town" in seen and '"verb":"bead.created"' in seen


def until(lines: Iterator[str], wanted: str) -> bool:
    deadline = time.monotonic() + 30  # the feed checks every refresh_seconds (1 here): bound the wait
    for line in lines:
        if line == wanted:
            return True
        if time.monotonic() > deadline:
            break
    return False


def test_a_write_without_an_event_is_a_touch_on_the_live_feed(site: Site) -> None:
    """An agent's heartbeat (or a model request the gateway meters) writes no event: the page still hears of it."""
    polecat = site.town.agent_add(operator(), "nux", Role.polecat.value).agent
    c = site.login()
    with c.stream("GET", "/live", params={"after": str(site.town.last_event_id(operator()))}, timeout=20) as r:
        lines = r.iter_lines()
        assert next(lines) == "retry: 2000"
        site.town.heartbeat(polecat)
        assert until(lines, "event: touch")


def test_the_live_feed_says_stale_while_the_town_cannot_be_read_and_fresh_after(site: Site) -> None:
    c = site.login()
    start = site.town.last_event_id(operator())
    with c.stream("GET", "/live", params={"after": str(start)}, timeout=20) as r:
        lines = r.iter_lines()
        site.town.broken = True  # nothing is written: the feed's quiet check finds it out
        assert until(lines, "event: stale")
        site.town.broken = False
        assert until(lines, "event: fresh")
        site.town.bead_create(operator(), "after the recovery")
        assert until(lines, "event: town")


def test_metrics_are_prometheus_text(site: Site) -> None:
    op = operator()
    site.town.bead_create(op, "one")
    site.town.spawn(op, "polecat")
    text = site.client().get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"\\]*(\\.[^"\\]*)*",?)*\})? -?[0-9.e+Inf]+$')
    for line in text.text.splitlines():
        assert line.startswith("# ") or sample.match(line), line
    assert 'gastown_beads{status="open"} 1' in text.text
    assert 'gastown_agents{role="polecat",state="running"} 1' in text.text
    assert 'gastown_gateway_request_duration_seconds_bucket{le="+Inf"} 0' in text.text
    assert "# TYPE gastown_merge_gate_seconds histogram" in text.text
    assert "# TYPE gastown_dispatch_latency_seconds histogram" in text.text
    assert "gastown_dispatch_latency_seconds_count 0" in text.text


@pytest.mark.parametrize("path", ["/", "/board", "/agents", "/merges", "/convoys", "/spend", "/feed"])
def test_a_page_whose_data_fails_still_answers_with_every_panel_marked(site: Site, path: str) -> None:
    c = site.login()
    site.town.broken = True
    r = c.get(path)
    assert r.status_code == 200 and "Traceback" not in r.text
    assert r.text.count('class="stale-banner') >= 1 and "disk I/O error" in r.text
