"""Which iptables the town uses: the variant (nft or legacy) that holds the host Docker's rules, so a town in a
container whose iptables defaults to another variant than the host's still fences its bridge."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from gastown_mcp.errors import RuntimeUnavailable
from gastown_mcp.runtime import network


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    network._tools.cache_clear()
    yield
    network._tools.cache_clear()


def fake_host(monkeypatch: pytest.MonkeyPatch, installed: set[str], with_docker_chain: set[str]) -> list[str]:
    asked: list[str] = []

    def run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        asked.append(tool)
        code = 0 if tool in with_docker_chain else 1
        return subprocess.CompletedProcess([tool, *args], code, "", "")

    monkeypatch.setattr(network, "_run", run)
    monkeypatch.setattr(network.shutil, "which", lambda name: f"/usr/sbin/{name}" if name in installed else None)
    return asked


ALL = {f"{t}{v}" for t in ("iptables", "ip6tables") for v in ("", "-nft", "-legacy")}


def test_the_default_iptables_is_used_when_it_sees_dockers_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_host(monkeypatch, ALL, {"iptables"})
    assert network._tools() == ("iptables", "ip6tables")
    assert asked == ["iptables"]


def test_the_legacy_variant_is_used_when_only_it_sees_dockers_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, ALL, {"iptables-legacy"})
    assert network._tools() == ("iptables-legacy", "ip6tables-legacy")


def test_without_dockers_chains_anywhere_the_default_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, {"iptables"}, set())
    assert network._tools() == ("iptables",)


def test_no_iptables_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, set(), set())
    with pytest.raises(RuntimeUnavailable, match=r"install-docker\.sh"):
        network._tools()
