"""The factory end to end: real Docker, real Claude Code in the agent image, the scripted stand-in as the model.

One town (MCP server, gateway, witness) runs for the whole module; each test uses its own agents and beads,
and steps the witness with `tick()` instead of waiting for its loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gastown_mcp.models import BeadStatus
from gastown_mcp.runtime.docker_backend import DockerRuntime

from .harness import E2E, OPERATOR, running_town

pytestmark = pytest.mark.docker

IDLE_SECONDS = 5.0


@pytest.fixture(scope="module")
def e2e(docker_runtime: DockerRuntime, agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    with running_town(tmp_path_factory.mktemp("e2e"), docker_runtime, agent_image, idle_seconds=IDLE_SECONDS) as t:
        yield t


def test_a_polecat_claims_its_bead_commits_on_its_branch_and_completes_it(e2e: E2E) -> None:
    bead = e2e.bead("Add a CONTRIBUTING file")
    agent = e2e.spawn("furiosa", bead)
    status = e2e.wait_exit("furiosa")
    assert status.reason == "ok", e2e.logs("furiosa")

    done = e2e.town.store.beads.get(bead)
    assert done.status is BeadStatus.done, e2e.logs("furiosa")
    assert done.result is not None and done.result.commit
    branch = f"polecat/furiosa/{bead}"
    assert done.result.branch == branch
    assert e2e.git("rev-parse", f"refs/heads/{branch}") == done.result.commit
    assert f"{bead}.md" in e2e.git("show", "--name-only", "--format=", done.result.commit).splitlines()

    result = e2e.result_of("furiosa")
    assert result["is_error"] is False and result["permission_denials"] == []
    assert result["session_id"] == agent.metadata["session_id"]
    # What the gateway metered is what Claude Code was told, is what the stand-in reported.
    [metered] = e2e.town.usage(OPERATOR, "furiosa")
    seen = result["usage"]
    assert (metered.input_tokens, metered.output_tokens, metered.cache_creation_tokens, metered.cache_read_tokens) == (
        seen["input_tokens"],
        seen["output_tokens"],
        seen["cache_creation_input_tokens"],
        seen["cache_read_input_tokens"],
    )
    reported = [r.usage for r in e2e.requests_of("furiosa") if r.usage]
    assert metered.requests == len(reported)
    assert metered.input_tokens == sum(u["input_tokens"] for u in reported)
    assert metered.output_tokens == sum(u["output_tokens"] for u in reported)
