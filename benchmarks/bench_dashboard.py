"""The dashboard at 100k beads: board pages p50/p95 against `/healthz` of the same server (the reference),
`/metrics` (the first scrape of a town with nothing counted yet, which counts every claim and merge of its
history; the first scrape of a restarted dashboard process, which resumes from what the town kept; and later
ones), the live feed's latency from a write to the SSE client and to a real browser's page, and the dashboard
process's CPU on an idle town, in rounds that alternate nothing open with a live feed open, and (in Chromium)
a blank tab with the overview open (its panels are redrawn only when the live feed says the town changed).

The town is built like bench_ready's (100k beads, a lived-in status mix, every third bead labelled) plus the
events of its history (a claim for every bead that was worked, a testing spell and a landing for every done
bead). Before each timed request of a page the benchmark writes to the town (a bead's notes, not timed), so
every panel is drawn afresh; one more row times the overview when nothing changed (panels drawn from the store
are then reused). The dashboard is served by its own process (uvicorn, one worker); the client (an HTTP client logged in
as the operator) runs here, and the browser is Debian's headless Chromium driven by Selenium (skipped with a
note when it is not installed). Run: `.venv/bin/python benchmarks/bench_dashboard.py` (figures also go to
benchmarks/results/dashboard.json).
"""

from __future__ import annotations

import argparse
import faulthandler
import multiprocessing
import os
import random
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
from _report import write_report
from bench_ready import build, percentile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import CHROMEDRIVER, CHROMIUM, headless_chromium

from gastown_mcp.config import DashboardSection, Settings
from gastown_mcp.dashboard import build_dashboard
from gastown_mcp.dashboard.security import COOKIE
from gastown_mcp.follow import BELL_BUSY_S
from gastown_mcp.models import now_iso
from gastown_mcp.serving import bind, make_server
from gastown_mcp.store import Store
from gastown_mcp.town import Town, operator

PAGES = {
    "reference: /healthz": "/healthz",
    "board panel: 6 columns x 8": "/panel/board",
    "board page (with the status bar)": "/board",
    "one column, page 1 of ready": "/board?column=ready&page=1",
    "one column, deep page (merged, page 400)": "/board?column=merged&page=400",
    "filtered by rig label": "/panel/board?label=web",
    "title search": "/panel/board?q=bead%204242",
    "overview page (all panels)": "/",
    "/metrics (after the first scrape)": "/metrics",
}


def serve(town_dir: str, sock: Any) -> None:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where the dashboard process is
    settings = Settings(town_dir=Path(town_dir))
    town = Town(Store(settings), settings)
    port = sock.getsockname()[1]
    app = build_dashboard(town, DashboardSection(), [f"127.0.0.1:{port}"])
    make_server(app, lifespan="off").run(sockets=[sock])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=200, help="requests per page")
    parser.add_argument("--feed-writes", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--quiet-writes", type=int, default=3, help="feed writes each after a quiet spell")
    parser.add_argument("--rounds", type=int, default=3, help="idle CPU rounds (closed, then open, each round)")
    parser.add_argument("--no-browser", action="store_true", help="skip the figures taken in headless Chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gastown-bench-dash-") as tmp:
        settings = Settings(town_dir=Path(tmp))
        store = Store(settings)
        t0 = time.perf_counter()
        mix = build(store, args.beads, random.Random(7))
        history = add_history(store, random.Random(8))
        town = Town(store, settings)
        token = town.operator_token(operator())
        print(f"built {args.beads:,} beads and {history:,} events in {time.perf_counter() - t0:.1f}s: {mix}")
        scrapes: dict[str, dict[str, float]] = {}
        child, url = start_dashboard(tmp)
        try:
            scrapes["/metrics, first scrape, nothing counted yet"] = {"ms": first_scrape(url)}
        finally:
            stop_dashboard(child)
        child, url = start_dashboard(tmp)  # a restart: its first scrape resumes from what the town kept
        try:
            scrapes["/metrics, first scrape after a restart"] = {"ms": first_scrape(url)}
            for label, figure in scrapes.items():
                print(f"{label}: {figure['ms']:.0f} ms")
            rows = run(url, token, town, child.pid or 0, args)
            rows["pages"] = {**scrapes, **rows["pages"]}
        finally:
            stop_dashboard(child)
            store.close()
    write_report("dashboard", rows, file="dashboard", beads=args.beads)


def start_dashboard(town_dir: str) -> tuple[Any, str]:
    """The dashboard in a process of its own, answering: (the process, its URL)."""
    sock = bind("127.0.0.1")
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    child = multiprocessing.get_context("fork").Process(target=serve, args=(town_dir, sock), daemon=True)
    child.start()
    sock.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx2.get(url + "/healthz", timeout=5)
            return child, url
        except httpx2.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop_dashboard(child: Any) -> None:
    child.terminate()
    child.join(10)


def first_scrape(url: str) -> float:
    """The process's first `/metrics`, on a connection already open (as the later scrapes are timed)."""
    with httpx2.Client(base_url=url, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        t = time.perf_counter()
        first = c.get("/metrics")
        ms = (time.perf_counter() - t) * 1000
    assert first.status_code == 200 and "gastown_dispatch_latency_seconds_count" in first.text
    return round(ms, 1)


def run(url: str, token: str, town: Town, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    c = httpx2.Client(base_url=url, timeout=30)
    assert c.post("/login", data={"token": token}).status_code == 303
    probe = town.bead_create(operator(), "probe: written before each timed request").id
    pages: dict[str, dict[str, float]] = {}
    print(f"{'page':<44} {'p50 ms':>8} {'p95 ms':>8} {'p50 / ref':>9}")
    op = operator()
    pages_run = [(label, path, True) for label, path in PAGES.items()]
    pages_run.append(("overview page, nothing changed since the last", "/", False))
    for label, path, changed in pages_run:
        for _ in range(5):
            assert c.get(path).status_code == 200
        samples = []
        for i in range(args.calls):
            if changed:  # a write (not timed) before each request: every panel is drawn, none reused
                town.bead_update(op, probe, notes=f"{label} {i}")
            t = time.perf_counter()
            r = c.get(path)
            samples.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200 and "stale-banner" not in r.text, path
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        ref = pages.get("reference: /healthz", {}).get("p50_ms", p50) or p50
        pages[label] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "ratio_to_reference": round(p50 / ref, 1)}
        print(f"{label:<44} {p50:>8.2f} {p95:>8.2f} {p50 / ref:>8.1f}x")
    feed = feed_latency(c, town, args.feed_writes, args.quiet_writes)
    print(
        f"live feed, write -> SSE client: p50 {feed['p50_ms']:.1f} ms, p95 {feed['p95_ms']:.1f} ms; "
        f"a write after {BELL_BUSY_S:.0f}s of quiet: {feed['after_quiet_ms']} ms"
    )
    idle = idle_cpu(c, pid, args.idle_seconds, args.rounds)
    print(
        f"dashboard process CPU on an idle town per {args.idle_seconds:.0f}s, {args.rounds} rounds each: nothing open "
        f"{idle['closed_cpu_s']}, one live feed open {idle['open_cpu_s']}"
    )
    out: dict[str, Any] = {"pages": pages, "feed": feed, "idle": idle}
    if CHROMIUM and CHROMEDRIVER and not args.no_browser:
        out["browser"] = in_browser(url, token, town, pid, args)
    elif not args.no_browser:
        print("browser figures skipped: install chromium and chromium-driver (make browser)")
    return out


def feed_latency(c: httpx2.Client, town: Town, writes: int, after_quiet: int) -> dict[str, Any]:
    """A write to its event on an SSE client: `writes` in a row (a busy town), then `after_quiet` writes each
    after BELL_BUSY_S of quiet (the first write on a quiet town, when the watch looks less often)."""
    op = operator()
    got: list[float] = []
    quiet: list[float] = []
    with c.stream("GET", "/live", params={"after": str(town.last_event_id(op))}, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)  # the retry line: the stream is open

        def one(i: int) -> float:
            t = time.perf_counter()
            bead = town.bead_create(op, f"feed probe {i}")
            for line in lines:
                if line.startswith("data:") and bead.id in line:
                    break
            return (time.perf_counter() - t) * 1000

        for i in range(writes):
            got.append(one(i))
            time.sleep(0.05)
        for i in range(after_quiet):
            time.sleep(BELL_BUSY_S + 1)
            quiet.append(round(one(writes + i), 1))
    return {
        "writes": writes,
        "p50_ms": round(percentile(got, 50), 1),
        "p95_ms": round(percentile(got, 95), 1),
        "after_quiet_ms": quiet,
    }


def idle_cpu(c: httpx2.Client, pid: int, seconds: float, rounds: int) -> dict[str, Any]:
    """The dashboard process's CPU seconds per `seconds` on an idle town, in rounds: nothing open, then one live
    feed open (an SSE client), and so on; the same run, so both see the same machine load."""
    closed: list[float] = []
    opened: list[float] = []
    host, port = str(c.base_url.host), int(c.base_url.port or 80)
    cookie = f"{COOKIE}={c.cookies.get(COOKIE)}"
    for _ in range(rounds):
        before = cpu_seconds(pid)
        time.sleep(seconds)
        closed.append(round(cpu_seconds(pid) - before, 3))
        with socket.create_connection((host, port), timeout=30) as feed:  # a live feed, held open unread
            feed.sendall(f"GET /live HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n\r\n".encode())
            assert b" 200 " in feed.recv(4096)
            time.sleep(1)
            before = cpu_seconds(pid)
            time.sleep(seconds)
            opened.append(round(cpu_seconds(pid) - before, 3))
        time.sleep(1)  # the dashboard notices the closed connection
    return {"seconds": seconds, "closed_cpu_s": closed, "open_cpu_s": opened}


def add_history(store: Store, rng: random.Random) -> int:
    """The events a lived-in town has for its beads: a claim for every bead that was worked (done or in
    progress), then for done ones a testing spell of the merge queue and the landing. Returns how many."""
    rows = store.db.query("SELECT id, status, created_at FROM beads WHERE status IN ('done', 'in_progress')")
    events = []
    for r in rows:
        created = datetime.strptime(r["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        claimed = created + rng.uniform(0.2, 30)
        agent = f"polecat-{rng.randrange(32)}"
        events.append((now_iso(claimed), agent, "bead.claimed", r["id"], agent))
        if r["status"] == "done":
            testing = claimed + rng.uniform(60, 600)
            events.append((now_iso(testing), "refinery", "merge.testing", r["id"], None))
            events.append((now_iso(testing + rng.uniform(2, 120)), "refinery", "merge.merged", r["id"], None))
            events.append((now_iso(testing + 1), "refinery", "bead.merged", r["id"], None))
    events.sort()
    with store.db.write() as tx:
        tx.conn.executemany("INSERT INTO events (at, actor, verb, bead_id, agent) VALUES (?,?,?,?,?)", events)
    store.db.conn.execute("ANALYZE")
    return len(events)


def in_browser(url: str, token: str, town: Town, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """In headless Chromium: the live feed's latency from a write to the bead's line on the page, and the
    dashboard process's CPU with the overview open (its panels refresh and its live feed is open)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    op = operator()
    with headless_chromium(CHROMIUM or "", CHROMEDRIVER or "", page_load_timeout=60) as driver:
        driver.get(url + "/feed")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "token"))
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "login").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "feed-list"))
        # The page notes when each bead's line appears (its own clock: the same wall clock as this process).
        driver.execute_script(
            """window.__seen = {};
            new MutationObserver(() => {
              const now = Date.now();
              document.querySelectorAll('#feed-list a[href^="/bead/"]').forEach((a) => {
                if (!(a.textContent in window.__seen)) window.__seen[a.textContent] = now;
              });
            }).observe(document.body, {childList: true, subtree: true});"""
        )
        time.sleep(1)
        got: list[float] = []
        for i in range(args.feed_writes):
            sent = time.time() * 1000
            bead = town.bead_create(op, f"browser probe {i}")
            seen = WebDriverWait(driver, 30, poll_frequency=0.05).until(
                lambda d, b=bead.id: d.execute_script("return window.__seen[arguments[0]]", b)
            )
            got.append(float(seen) - sent)
            time.sleep(0.05)
        feed = {
            "writes": args.feed_writes,
            "p50_ms": round(percentile(got, 50), 1),
            "p95_ms": round(percentile(got, 95), 1),
        }
        print(
            f"live feed, write -> line on the page (Chromium): p50 {feed['p50_ms']:.1f} ms, p95 {feed['p95_ms']:.1f} ms"
        )
        closed: list[float] = []
        opened: list[float] = []
        for _ in range(args.rounds):  # a blank tab, then the overview, and so on
            driver.get("about:blank")
            time.sleep(2)
            before = cpu_seconds(pid)
            time.sleep(args.idle_seconds)
            closed.append(round(cpu_seconds(pid) - before, 3))
            driver.get(url + "/")
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "panel-board"))
            time.sleep(2)
            before = cpu_seconds(pid)
            time.sleep(args.idle_seconds)
            opened.append(round(cpu_seconds(pid) - before, 3))
        print(
            f"dashboard process CPU per {args.idle_seconds:.0f}s in Chromium, {args.rounds} rounds each: a blank tab "
            f"{closed}, the overview open {opened}"
        )
        return {
            "feed": feed,
            "blank_tab_cpu_s": closed,
            "overview_open_cpu_s": opened,
            "seconds": args.idle_seconds,
        }


if __name__ == "__main__":
    main()
