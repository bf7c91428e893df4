"""The self-test and its probe name no place off this machine, and the firewall reading judges rules correctly.

Pure unit tests: they read source and parse sample `iptables -S` output; nothing runs and nothing is sent.
"""

from __future__ import annotations

import ast
import contextlib
import ipaddress
import re
from pathlib import Path

import pytest

from gastown_mcp.runtime import probe, selftest
from gastown_mcp.runtime.selftest import _firewall_problems, _iptables_rules

SOURCES = [Path(probe.__file__), Path(selftest.__file__)]
ALLOWED = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"), selftest.OUTSIDE_RANGE]
# Top-level domains of real places (file suffixes such as .py or .sh are not in the list).
TLDS = {"com", "org", "net", "io", "dev", "ai", "app", "cloud", "edu", "gov", "info", "biz", "co", "us", "uk", "de"}
NAME_LOOKUPS = ("getaddrinfo", "gethostbyname", "gethostbyaddr", "gethostname", "getfqdn", "nslookup", "dig ")


def string_constants(path: Path) -> list[str]:
    return [
        n.value
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def addresses_in(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every IPv4 (dotted) or IPv6 (two or more colons) address or network written in `text`."""
    candidates = re.findall(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?(?![\d.])", text)
    candidates += [t for t in re.findall(r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*(?:/\d{1,3})?", text) if t.count(":") >= 2]
    found = []
    for candidate in candidates:
        with contextlib.suppress(ValueError):
            found.append(ipaddress.ip_network(candidate, strict=False))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_probe_and_selftest_name_no_address_off_this_machine(path: Path) -> None:
    literals = [a for text in string_constants(path) for a in addresses_in(text)]
    outside = [str(a) for a in literals if not any(a.subnet_of(r) for r in ALLOWED if a.version == r.version)]
    assert not outside, f"{path.name} names addresses off this machine: {outside}"


def test_the_source_scan_would_catch_an_outside_address() -> None:
    # Input for the scanner only: these addresses are parsed here, never connected to.
    found = addresses_in('connect(("192.0.2.1", 443)); ns = "8.8.8.8"; v6 = "2001:db8::1"')
    assert [str(a) for a in found] == ["192.0.2.1/32", "8.8.8.8/32", "2001:db8::1/128"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_probe_and_selftest_name_no_outside_host_and_look_up_no_names(path: Path) -> None:
    names = [
        m.group(0)
        for text in string_constants(path)
        for m in re.finditer(r"\b(?:[a-z0-9-]+\.)+([a-z]{2,})\b", text.lower())
        if m.group(1) in TLDS
    ]
    assert not names, f"{path.name} names hosts: {names}"
    source = path.read_text()
    assert not [call for call in NAME_LOOKUPS if call in source], "name lookups could send DNS queries off-machine"


def test_the_outside_range_is_the_benchmark_range_and_not_routed_on_the_internet() -> None:
    assert ipaddress.ip_network("198.18.0.0/15") == selftest.OUTSIDE_RANGE
    assert not selftest.OUTSIDE_RANGE.is_global


BRIDGE = "gt-0123456789a"
GOOD_V4 = f"""-P INPUT ACCEPT
-P FORWARD DROP
-N DOCKER-USER
-N GT-IN-{BRIDGE}
-N GT-FWD-{BRIDGE}
-A INPUT -i {BRIDGE} -j GT-IN-{BRIDGE}
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -o {BRIDGE} -j GT-FWD-{BRIDGE}
-A DOCKER-USER -i {BRIDGE} -j GT-FWD-{BRIDGE}
-A DOCKER-USER -j RETURN
-A GT-IN-{BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A GT-IN-{BRIDGE} -p tcp -m tcp --dport 8765 -j ACCEPT
-A GT-IN-{BRIDGE} -p tcp -j REJECT --reject-with tcp-reset
-A GT-IN-{BRIDGE} -j REJECT --reject-with icmp-port-unreachable
-A GT-FWD-{BRIDGE} -p tcp -j REJECT --reject-with tcp-reset
-A GT-FWD-{BRIDGE} -j REJECT --reject-with icmp-port-unreachable
"""


def chains_of(text: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    class Done:
        returncode, stdout = 0, text

    monkeypatch.setattr(selftest.subprocess, "run", lambda *a, **k: Done())
    return _iptables_rules("iptables")


def test_the_towns_installed_rules_read_as_fenced(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _firewall_problems(chains_of(GOOD_V4, monkeypatch), BRIDGE, (8765,), ipv6=False) == []


def test_missing_input_rules_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    text = GOOD_V4.replace(f"-A INPUT -i {BRIDGE} -j GT-IN-{BRIDGE}\n", "")
    problems = _firewall_problems(chains_of(text, monkeypatch), BRIDGE, (8765,), ipv6=False)
    assert problems == [f"no INPUT rule from {BRIDGE} into a chain that rejects the rest"]


def test_a_chain_that_does_not_end_in_reject_or_a_missing_town_port_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = GOOD_V4.replace(f"-A GT-IN-{BRIDGE} -j REJECT --reject-with icmp-port-unreachable\n", "")
    text = text.replace("--dport 8765", "--dport 9999")
    problems = _firewall_problems(chains_of(text, monkeypatch), BRIDGE, (8765,), ipv6=False)
    assert f"no INPUT rule from {BRIDGE} into a chain that rejects the rest" in problems
    assert f"GT-IN-{BRIDGE} does not accept town ports [8765]" in problems


def test_a_town_port_accepted_on_every_host_address_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = "172.30.0.1"
    scoped = GOOD_V4.replace("-p tcp -m tcp --dport 8765", f"-d {gateway}/32 -p tcp -m tcp --dport 8765")
    assert _firewall_problems(chains_of(scoped, monkeypatch), BRIDGE, (8765,), ipv6=False, gateway=gateway) == []
    problems = _firewall_problems(chains_of(GOOD_V4, monkeypatch), BRIDGE, (8765,), ipv6=False, gateway=gateway)
    assert len(problems) == 1 and f"other than the gateway {gateway}" in problems[0]


def test_missing_forward_rules_are_reported_per_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    text = GOOD_V4.replace(f"-A DOCKER-USER -o {BRIDGE} -j GT-FWD-{BRIDGE}\n", "")
    problems = _firewall_problems(chains_of(text, monkeypatch), BRIDGE, (8765,), ipv6=False)
    assert problems == [f"nothing rejects traffic routed to {BRIDGE}"]
