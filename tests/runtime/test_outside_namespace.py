"""The self-test's "outside": a namespace with a listener that the host reaches and that is always removed again.

These need root and iproute2 but no Docker engine; every connection goes into a veth pair the test created.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gastown_mcp.errors import RuntimeUnavailable
from gastown_mcp.runtime import selftest
from gastown_mcp.runtime.selftest import Outside, outside_answers_host, outside_listener, remove_stale_outsides


@pytest.fixture(autouse=True)
def needs_root_and_ip(root: None) -> None:
    if subprocess.run(["ip", "-V"], capture_output=True, check=False).returncode != 0:
        pytest.skip("iproute2 (`ip`) is not installed")


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout.strip()
    return {entry["name"] for entry in json.loads(out or "[]")}


def links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def route_device(address: str) -> str:
    out = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True, check=True).stdout
    return str(json.loads(out)[0]["dev"])


@pytest.fixture
def outside() -> Iterator[Outside]:
    with outside_listener() as made:
        yield made


def test_the_outside_listener_answers_the_host_with_its_token_through_its_own_veth(outside: Outside) -> None:
    result = outside_answers_host(outside)
    assert result.passed, result.detail
    assert f"{outside.address}:{outside.port}" in result.detail
    assert ipaddress.ip_address(outside.address) in selftest.OUTSIDE_RANGE
    # The only way to the listener is the veth the self-test made: nothing addressed there leaves the host.
    assert route_device(outside.address) == outside.host_link
    assert outside.namespace in namespaces()


def test_the_host_check_fails_for_an_answer_that_is_not_the_listeners_token(outside: Outside) -> None:
    result = outside_answers_host(dataclasses.replace(outside, token="not-the-token"))
    assert not result.passed
    assert "not its token" in result.detail


def test_the_host_check_fails_and_sends_nothing_once_the_outside_is_gone() -> None:
    with outside_listener() as made:
        pass
    assert made.namespace not in namespaces()
    assert made.host_link not in links()
    result = outside_answers_host(made)
    assert not result.passed
    # With its veth gone the address would route elsewhere, so the check does not even try to connect.
    assert result.detail.startswith("not tried")


def test_a_concurrent_selftests_outside_is_not_taken_for_a_stale_one(outside: Outside) -> None:
    assert outside.namespace not in remove_stale_outsides()
    assert outside_answers_host(outside).passed


def test_an_outside_left_by_a_killed_selftest_is_removed_by_the_next_run() -> None:
    code = (
        "from gastown_mcp.runtime.selftest import outside_listener\n"
        "with outside_listener() as o:\n"
        "    print(o.namespace, o.host_link, flush=True)\n"
        "    input()\n"
    )
    crashed = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert crashed.stdout is not None
        readable, _, _ = select.select([crashed.stdout], [], [], 30)
        assert readable, "the first self-test never set up its outside"
        namespace, host_link = crashed.stdout.readline().split()
    finally:
        os.kill(crashed.pid, signal.SIGKILL)  # no finally block of its own runs: the leftovers stay
        crashed.wait(timeout=10)
    assert namespace in namespaces()
    assert host_link in links()

    with outside_listener() as fresh:
        assert namespace not in namespaces()
        assert host_link not in links()
        assert outside_answers_host(fresh).passed
    assert fresh.namespace not in namespaces()


def test_nothing_is_left_behind_when_the_listener_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selftest, "OUTSIDE_LISTENER", "raise SystemExit('listener broke on purpose')")
    before_ns, before_links = namespaces(), links()
    with pytest.raises(RuntimeUnavailable, match="listener broke on purpose"), outside_listener(ready_timeout_s=10):
        pytest.fail("the outside must not be handed out without a listener")
    assert namespaces() <= before_ns
    assert links() <= before_links


def test_the_outside_is_removed_when_the_code_using_it_fails() -> None:
    with pytest.raises(ZeroDivisionError), outside_listener() as made:
        _ = 1 / 0
    assert made.namespace not in namespaces()
    assert made.host_link not in links()
