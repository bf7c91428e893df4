"""The image build: idempotent, and it reports what it did."""

from __future__ import annotations

import pytest

from gastown_mcp.runtime.docker_backend import DockerRuntime
from gastown_mcp.runtime.image import ImageConfig, build_images
from gastown_mcp.runtime.protocol import AGENT_GID, AGENT_UID

pytestmark = pytest.mark.docker


def test_building_images_that_are_up_to_date_skips_both(runtime: DockerRuntime, agent_image: str) -> None:
    lines: list[str] = []
    result = build_images(runtime.client, ImageConfig(), progress=lines.append)
    assert result.built == ()
    assert set(result.skipped) == {"gastown-base:bookworm", agent_image}
    assert "base image gastown-base:bookworm is up to date" in lines
    assert f"agent image {agent_image} is up to date" in lines
    assert not [line for line in lines if line.startswith(("Step ", "building "))], "nothing is built or stepped"


def test_the_agent_image_runs_as_the_agent_ids_with_the_sandbox_entrypoint(
    runtime: DockerRuntime, agent_image: str
) -> None:
    config = runtime.client.images.get(agent_image).attrs["Config"]
    assert config["User"] == f"{AGENT_UID}:{AGENT_GID}" == "61000:61000"
    assert config["Entrypoint"] == ["/opt/gastown/entrypoint.sh"]
    assert "ANTHROPIC_API_KEY" not in " ".join(config.get("Env") or [])
