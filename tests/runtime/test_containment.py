"""Containment, checked from inside real agent containers (the same checks as `gastown doctor --sandbox`)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

import pytest

from gastown_mcp.runtime.selftest import OUTSIDE_RANGE, CheckResult, _resolver_check

pytestmark = pytest.mark.docker


def check(results: dict[str, CheckResult], name: str) -> None:
    assert name in results, f"check {name} did not run: {sorted(results)}"
    result = results[name]
    assert result.passed, f"{name}: {result.detail}"


def test_the_selftest_reports_every_check_and_all_pass(selftest: dict[str, CheckResult]) -> None:
    failed = {r.name: r.detail for r in selftest.values() if not r.passed}
    assert not failed
    assert len(selftest) >= 15


def test_agent_runs_as_a_non_root_user(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "uid_not_root")


def test_agent_has_no_capabilities_and_no_new_privileges(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "capabilities_empty")
    check(selftest, "no_new_privileges")


def test_root_filesystem_is_read_only(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "rootfs_read_only")


def test_home_and_tmp_are_size_capped_tmpfs_not_the_host_home(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "home_and_tmp_are_capped_tmpfs")
    check(selftest, "no_host_home")


def test_there_is_no_docker_socket_and_no_provider_key(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "no_docker_socket")
    check(selftest, "no_provider_key_in_env")


def test_the_selftest_checks_that_agent_dns_answers_nothing_and_forwards_nowhere(
    selftest: dict[str, CheckResult],
) -> None:
    check(selftest, "agent_dns_forwards_nowhere")
    check(selftest, "no_dns_answers_inside")
    assert "upstreams=['127.0.0.1']" in selftest["agent_dns_forwards_nowhere"].detail


@pytest.mark.parametrize(
    ("servers", "search"), [([], []), (["10.0.0.2"], []), (["127.0.0.1", "10.0.0.2"], []), (["127.0.0.1"], ["corp"])]
)
def test_the_dns_check_fails_for_an_engine_default_or_an_outside_upstream(
    servers: list[str], search: list[str]
) -> None:
    class Reported:
        def resolver(self, town: str, agent: str) -> tuple[list[str], list[str]]:
            return servers, search

    result = _resolver_check(Reported(), "t", "probe")  # type: ignore[arg-type]
    assert not result.passed, result.detail


def test_agent_has_no_route_to_the_internet(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "no_route_to_internet")


def test_probe_cannot_reach_an_outside_listener_the_selftest_created(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "outside_listener_answers_host")
    check(selftest, "no_route_to_internet")
    # The address the host reached is the one the agent tried, and the agent's attempt did not connect.
    target = selftest["outside_listener_answers_host"].detail.split()[0]
    assert f"outside listener {target} -> " in selftest["no_route_to_internet"].detail
    assert f"{target} -> connected" not in selftest["no_route_to_internet"].detail


def test_the_outside_the_probe_tries_is_a_real_listener_on_this_machine(selftest: dict[str, CheckResult]) -> None:
    host = selftest["outside_listener_answers_host"]
    assert host.passed, f"the outside listener did not answer the host, so the probe proved nothing: {host.detail}"
    address = ipaddress.ip_address(host.detail.split()[0].rsplit(":", 1)[0])
    assert address in OUTSIDE_RANGE
    assert "answered with its token" in host.detail


def test_the_probe_reads_its_routes_and_nameservers_without_querying_them(selftest: dict[str, CheckResult]) -> None:
    detail = selftest["no_route_to_internet"].detail
    assert "routes=[" in detail
    assert "nameservers=[" in detail
    assert "(read, not queried)" in detail


def test_the_town_networks_host_firewall_rules_are_in_place(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "host_firewall_rules_installed")


def test_the_selftest_leaves_no_outside_namespace_behind(selftest: dict[str, CheckResult]) -> None:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout.strip()
    mine = [n["name"] for n in json.loads(out or "[]") if n["name"].endswith(f"-{os.getpid()}")]
    assert not mine


def test_agent_reaches_the_town_port_and_no_other_host_port(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "town_port_reachable")
    check(selftest, "other_host_ports_blocked")


def test_another_agents_container_is_unreachable(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "peer_agent_listening")
    check(selftest, "other_agent_unreachable")


def test_a_memory_hog_is_oom_killed_and_reported_as_oom(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "memory_hog_oom_killed")


def test_a_fork_bomb_stops_at_the_pids_limit(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "fork_bomb_stopped_at_pids_limit")


def test_the_wall_clock_limit_stops_a_sleeper(selftest: dict[str, CheckResult]) -> None:
    check(selftest, "wallclock_limit_stops_sleeper")
