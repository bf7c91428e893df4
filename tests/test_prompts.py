"""Role prompts: one copy in gastown_mcp/prompts/, naming only tools the role is given, shipped as-is in the image."""

from __future__ import annotations

import re
import shutil
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import pytest

from gastown_mcp.models import Role
from gastown_mcp.runtime.image import PROMPTS_DIR, ImageConfig, build_context, tree_digest
from gastown_mcp.town import roles

TOOL_NAME = re.compile(r"\b(?:bead|town|goal|directive|convoy)_[a-z_]*[a-z]\b")


def _prompts() -> Traversable:
    return resources.files("gastown_mcp").joinpath("prompts")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("role", list(Role))
def test_a_prompt_names_only_tools_its_role_is_given(role: Role) -> None:
    text = _prompts().joinpath(f"{role.value}.md").read_text()
    named = set(TOOL_NAME.findall(text))
    assert named - set(roles.TOOL_ACTIONS) == set(), "the prompt names tools that do not exist"
    assert named - set(roles.tools_for(role)) == set(), f"the {role.value} role is not given these tools"


def test_every_prompt_file_belongs_to_a_role() -> None:
    names = {p.name for p in _prompts().iterdir() if p.name.endswith(".md")}
    assert names == {f"{r.value}.md" for r in Role}


def test_the_image_build_context_carries_the_prompts_byte_for_byte(tmp_path: Path) -> None:
    served = Path(str(_prompts()))
    with build_context(ImageConfig(extra_ca_dir=tmp_path / "no-extra-cas")) as context:
        shipped = _files(context / PROMPTS_DIR)
        others = [p for p in context.rglob("*.md") if not p.is_relative_to(context / PROMPTS_DIR)]
    assert shipped == _files(served) and shipped
    assert others == [], "a second copy of the prompts is in the build context"


def test_the_dockerfile_copies_the_prompts_where_run_claude_reads_them() -> None:
    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "Dockerfile").read_text()
    assert f"COPY {PROMPTS_DIR}/ /opt/gastown/prompts/" in dockerfile
    script = (root / "sandbox" / "run-claude.sh").read_text()
    assert 'opt="${GASTOWN_OPT:-/opt/gastown}"' in script and 'prompt_file="$opt/prompts/${role}.md"' in script


def test_a_changed_prompt_changes_the_agent_image_inputs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    checkout = tmp_path / "checkout"
    shutil.copytree(root / "sandbox", checkout / "sandbox")
    shutil.copytree(root / PROMPTS_DIR, checkout / PROMPTS_DIR)
    shutil.copy2(root / "Dockerfile", checkout / "Dockerfile")
    config = ImageConfig(context_dir=checkout, extra_ca_dir=tmp_path / "no-extra-cas")
    with build_context(config) as context:
        before = tree_digest(context)
    with (checkout / PROMPTS_DIR / "polecat.md").open("a") as f:
        f.write("9. One more rule.\n")
    with build_context(config) as context:
        after = tree_digest(context)
    changed = {line.split(":")[0] for line in set(after) ^ set(before)}
    assert changed == {f"{PROMPTS_DIR}/polecat.md"}
