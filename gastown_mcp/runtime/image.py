"""Build the agent image and the town server image, and first a local base image when no registry is reachable.

The base comes from Debian packages (`mmdebstrap ... | docker import`), so nothing is pulled. The agent image
is the top-level Dockerfile built on that base with the classic builder (no buildx), from sandbox/ and the role
prompts in gastown_mcp/prompts/; the town image (for compose.yaml) is Dockerfile.town, with wheels of this
checkout and its dependencies made on the host so its build installs offline. Every step is idempotent: an
image whose build inputs have not changed is skipped unless `rebuild=True`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from gastown_mcp.errors import GastownError, NotFound, RuntimeUnavailable
from gastown_mcp.runtime.docker_backend import translate_errors
from gastown_mcp.runtime.protocol import DEFAULT_IMAGE

Progress = Callable[[str], None]
LABEL_INPUTS = "gastown.inputs"
DEFAULT_CONTEXT = Path(__file__).resolve().parents[2]
TOWN_IMAGE = "gastown-town:latest"
TOWN_DOCKERFILE = "Dockerfile.town"
PROMPTS_DIR = "gastown_mcp/prompts"


@dataclass(frozen=True)
class ImageConfig:
    """What to build. `base_image=None` builds the local Debian base `base_tag`; a name uses that instead."""

    agent_tag: str = DEFAULT_IMAGE
    town_tag: str = TOWN_IMAGE
    base_tag: str = "gastown-base:bookworm"
    claude_stage_tag: str = "gastown-claude-stage:latest"
    base_image: str | None = None
    suite: str = "bookworm"
    mirror: str | None = None
    packages: tuple[str, ...] = ("python3", "git", "ca-certificates")
    context_dir: Path = DEFAULT_CONTEXT
    extra_ca_dir: Path = Path("/usr/local/share/ca-certificates")
    build_args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    agent_tag: str
    base: str
    built: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float


def build_images(
    client: docker.DockerClient,
    config: ImageConfig | None = None,
    rebuild: bool = False,
    progress: Progress = print,
    town: bool = False,
) -> BuildResult:
    """Build (or skip) the base and agent images, and with `town` the town image; report through `progress`."""
    cfg = config or ImageConfig()
    started = time.monotonic()
    built: list[str] = []
    skipped: list[str] = []
    base = _ensure_base(client, cfg, rebuild, progress, built, skipped)
    with build_context(cfg) as context:
        args = repr(sorted(cfg.build_args.items()))
        agent_inputs = _digest([base, _image_id(client, base), *tree_digest(context), args])
        if not rebuild and _has_inputs(client, cfg.agent_tag, agent_inputs):
            progress(f"agent image {cfg.agent_tag} is up to date")
            skipped.append(cfg.agent_tag)
        else:
            build_agent(client, cfg, base, context, agent_inputs, rebuild, progress)
            built.append(cfg.agent_tag)
    if town:
        _build_town(client, cfg, base, rebuild, progress, built, skipped)
    seconds = time.monotonic() - started
    progress(f"images ready in {seconds:.1f} s")
    return BuildResult(cfg.agent_tag, base, tuple(built), tuple(skipped), seconds)


def _ensure_base(
    client: docker.DockerClient,
    cfg: ImageConfig,
    rebuild: bool,
    progress: Progress,
    built: list[str],
    skipped: list[str],
) -> str:
    if cfg.base_image is not None:
        return cfg.base_image
    base_inputs = _digest([cfg.suite, cfg.mirror or "", *cfg.packages])
    if not rebuild and _has_inputs(client, cfg.base_tag, base_inputs):
        progress(f"base image {cfg.base_tag} is up to date")
        skipped.append(cfg.base_tag)
    else:
        build_base(cfg, base_inputs, progress)
        built.append(cfg.base_tag)
    return cfg.base_tag


def _build_town(
    client: docker.DockerClient,
    cfg: ImageConfig,
    base: str,
    rebuild: bool,
    progress: Progress,
    built: list[str],
    skipped: list[str],
) -> None:
    dockerfile = cfg.context_dir / TOWN_DOCKERFILE
    package = cfg.context_dir / "gastown_mcp"
    if not dockerfile.is_file() or not package.is_dir():
        raise NotFound(f"no {TOWN_DOCKERFILE} and gastown_mcp/ under {cfg.context_dir}; run from a source checkout")
    sources = [dockerfile, cfg.context_dir / "pyproject.toml"]
    sources += sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    inputs = _digest(
        [base, _image_id(client, base), *(f"{p.relative_to(cfg.context_dir)}:{_file_digest(p)}" for p in sources)]
    )
    if not rebuild and _has_inputs(client, cfg.town_tag, inputs):
        progress(f"town image {cfg.town_tag} is up to date")
        skipped.append(cfg.town_tag)
        return
    with tempfile.TemporaryDirectory(prefix="gastown-town-image-") as tmp:
        root = Path(tmp)
        shutil.copy2(dockerfile, root / "Dockerfile")
        progress("making wheels of gastown_mcp and its dependencies for the town image")
        wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(root / "wheels")]
        # With the otel extra: a compose town exports traces when its town.toml sets `[otel] endpoint`.
        done = subprocess.run([*wheel, f"{cfg.context_dir}[otel]", "pip"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise GastownError(f"`pip wheel` for the town image failed:\n{done.stderr[-2000:]}")
        progress(f"building town image {cfg.town_tag} on {base}")
        _docker_build(client, root, cfg.town_tag, None, {"BASE_IMAGE": base}, {LABEL_INPUTS: inputs}, rebuild, progress)
    progress(f"town image {cfg.town_tag} built")
    built.append(cfg.town_tag)


def build_base(cfg: ImageConfig, inputs: str, progress: Progress) -> None:
    """`mmdebstrap --variant=apt ... | docker import` into `cfg.base_tag` (needs root, mmdebstrap, docker CLI)."""
    for tool in ("mmdebstrap", "docker"):
        if shutil.which(tool) is None:
            raise RuntimeUnavailable(f"{tool} is not installed: run `sudo bash scripts/install-docker.sh`")
    progress(f"building base image {cfg.base_tag} from Debian {cfg.suite} packages (about 30 s)")
    strap = [
        "mmdebstrap",
        "--variant=apt",
        "--quiet",
        f"--include={','.join(cfg.packages)}",
        # Docs, man pages and translations are dead weight in an agent image.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        cfg.suite,
        "-",
    ]
    if cfg.mirror:
        strap.append(cfg.mirror)
    importer = ["docker", "import", "--change", f"LABEL {LABEL_INPUTS}={inputs}", "-", cfg.base_tag]
    with tempfile.TemporaryFile() as errors:
        producer = subprocess.Popen(strap, stdout=subprocess.PIPE, stderr=errors)
        assert producer.stdout is not None
        consumer = subprocess.run(importer, stdin=producer.stdout, capture_output=True, text=True, check=False)
        producer.stdout.close()
        producer.wait()
        if producer.returncode != 0 or consumer.returncode != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace")[-2000:] + consumer.stderr[-1000:]
            raise GastownError(f"building the base image {cfg.base_tag} failed:\n{detail}")
    progress(f"base image {cfg.base_tag} built")


def build_agent(
    client: docker.DockerClient,
    cfg: ImageConfig,
    base: str,
    context: Path,
    inputs: str,
    rebuild: bool,
    progress: Progress,
) -> None:
    """Build the top-level Dockerfile on `base` with the classic builder, streaming its steps to `progress`."""
    progress(f"building agent image {cfg.agent_tag} on {base}")
    # The download stage gets its own tag so a prune of dangling images cannot throw away its ~400 MB cache.
    for target, tag, labels in (("claude", cfg.claude_stage_tag, {}), (None, cfg.agent_tag, {LABEL_INPUTS: inputs})):
        buildargs = {"BASE_IMAGE": base, **cfg.build_args}
        _docker_build(client, context, tag, target, buildargs, labels, rebuild and target is not None, progress)
    progress(f"agent image {cfg.agent_tag} built")


def _docker_build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    target: str | None,
    buildargs: dict[str, str],
    labels: dict[str, str],
    nocache: bool,
    progress: Progress,
) -> None:
    """`docker build` with the classic builder, streaming its steps to `progress`."""
    with translate_errors(f"building {tag}"):
        stream: Iterator[dict[str, Any]] = client.api.build(
            path=str(context),
            tag=tag,
            target=target,
            buildargs=buildargs,
            labels=labels,
            nocache=nocache,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                raise GastownError(f"building {tag} failed: {chunk['error'].strip()}")
            line = str(chunk.get("stream", "")).strip()
            if line.startswith("Step "):
                progress(line)


@contextlib.contextmanager
def build_context(cfg: ImageConfig) -> Iterator[Path]:
    """The agent image's minimal build context, laid out as in the checkout so the Dockerfile reads the same.

    It holds the Dockerfile, sandbox/ with the host's extra CA files in sandbox/ca/, and gastown_mcp/prompts/
    (the one copy of the role prompts, which the MCP server serves too). The agent image's input digest is
    taken over every file here, so a changed prompt rebuilds the image.
    """
    dockerfile = cfg.context_dir / "Dockerfile"
    sandbox = cfg.context_dir / "sandbox"
    prompts = cfg.context_dir / PROMPTS_DIR
    if not dockerfile.is_file() or not sandbox.is_dir() or not prompts.is_dir():
        raise NotFound(
            f"no Dockerfile, sandbox/ and {PROMPTS_DIR}/ under {cfg.context_dir}; run from a source checkout"
        )
    with tempfile.TemporaryDirectory(prefix="gastown-image-") as tmp:
        root = Path(tmp)
        shutil.copy2(dockerfile, root / "Dockerfile")
        shutil.copytree(sandbox, root / "sandbox", symlinks=False)
        (root / "sandbox" / "ca").mkdir(exist_ok=True)
        if cfg.extra_ca_dir.is_dir():
            for crt in sorted(cfg.extra_ca_dir.glob("*.crt")):
                shutil.copy2(crt, root / "sandbox" / "ca" / crt.name)
        shutil.copytree(prompts, root / PROMPTS_DIR, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
        yield root


def tree_digest(root: Path) -> list[str]:
    """`path:sha256` of every file under `root`, sorted: what an image's input digest covers."""
    return [f"{path.relative_to(root)}:{_file_digest(path)}" for path in sorted(root.rglob("*")) if path.is_file()]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _image_id(client: docker.DockerClient, tag: str) -> str:
    try:
        return client.images.get(tag).id or ""
    except docker.errors.ImageNotFound:
        return ""


def _has_inputs(client: docker.DockerClient, tag: str, inputs: str) -> bool:
    with translate_errors(f"inspecting image {tag}"):
        try:
            image = client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return bool(labels.get(LABEL_INPUTS) == inputs)


def main(argv: list[str] | None = None) -> None:
    """`python -m gastown_mcp.runtime.image [--rebuild] [--base IMAGE]`: build the images from a checkout."""
    parser = argparse.ArgumentParser(description="Build the gastown base and agent images.")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--base", default=None, help="base image to build on instead of the local Debian base")
    parser.add_argument("--town", action="store_true", help="also build the town server image (compose.yaml)")
    args = parser.parse_args(argv)
    from gastown_mcp.runtime.docker_backend import connect

    build_images(connect(timeout_s=600), ImageConfig(base_image=args.base), rebuild=args.rebuild, town=args.town)


if __name__ == "__main__":
    main()
