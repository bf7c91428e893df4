"""The README's "Running the town inside a VM" recipe, for real.

`scripts/vm.sh build`, `up` and `push`, then inside the guest `make demo` (the factory: Claude Code polecats in
hardened containers) and `gastown doctor --sandbox` (containment proven from inside real containers, on the
VM's kernel), then `down`. Before `down` it removes the guest's apparmor package, sees Docker refuse every
container, and checks that `scripts/install-docker.sh` puts the package back. When this machine has the agent
images, they are built or found up to date here and loaded into the guest first, so the guest's `make demo`
finds them up to date instead of rebuilding.

The VM disk is cached in .cache/vm and persists between runs like an operator's VM: the guest keeps its venv
and images, so a second run skips those. Phase times are printed and written to .cache/vm/test-times.json.

Run with `make test-vm` (marked `vm`, so `make test` leaves it out). Skipped without root or a usable
/dev/kvm, unless CI is set and /dev/kvm exists: then it must pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VM_SH = ROOT / "scripts" / "vm.sh"
VM_DIR = ROOT / ".cache" / "vm"
IMAGES = ("gastown-base:bookworm", "gastown-agent:latest")
P = ParamSpec("P")
R = TypeVar("R")


def _kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def _require_vm_host() -> None:
    """Skip with the reason, except in CI on a machine with /dev/kvm: there a missing piece is a failure."""
    required = bool(os.environ.get("CI")) and os.path.exists("/dev/kvm")
    missing = []
    if os.geteuid() != 0:
        missing.append("building the VM disk needs root (mmdebstrap, apt-get)")
    if not _kvm_usable():
        missing.append("/dev/kvm is missing or not usable")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        missing.append("`scripts/vm.sh push` needs git and a git checkout")
    if missing:
        reason = "; ".join(missing)
        if required:
            pytest.fail(f"{reason} (CI is set and /dev/kvm exists, so the VM recipe must run)", pytrace=False)
        pytest.skip(reason)


def vm(*args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`bash scripts/vm.sh ARGS...` with its output captured; a failure shows both streams."""
    proc = subprocess.run(
        ["bash", str(VM_SH), *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"scripts/vm.sh {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout:\n{proc.stdout[-6000:]}\n--- stderr:\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return proc


def guest(command: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `command` in the guest's shell over `scripts/vm.sh ssh`."""
    return vm("ssh", str(VM_DIR), "--", command, timeout=timeout, check=check)


def _image_ids(command: list[str]) -> list[str] | None:
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    return proc.stdout.split() if proc.returncode == 0 else None


def _host_images_ready() -> bool:
    """Build (or find up to date) the agent images here, as `make image` does; False without a Docker engine."""
    try:
        from gastown_mcp.errors import GastownError
        from gastown_mcp.runtime.docker_backend import connect
        from gastown_mcp.runtime.image import build_images

        build_images(connect(timeout_s=600), progress=lambda _line: None)
    except (GastownError, OSError):
        return False
    return True


class Phases:
    """Wall-clock seconds per phase, printed and written next to the VM disk."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] = round(time.monotonic() - t0, 1)

    def report(self) -> str:
        self.seconds["total"] = round(time.monotonic() - self.started, 1)
        VM_DIR.mkdir(parents=True, exist_ok=True)
        (VM_DIR / "test-times.json").write_text(json.dumps(self.seconds, indent=2) + "\n")
        return " · ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())


@pytest.fixture
def phases() -> Iterator[Phases]:
    p = Phases()
    yield p
    print(f"\nVM recipe phases: {p.report()}")


@pytest.fixture
def booted_vm(phases: Phases) -> Iterator[None]:
    """`build` then `up`; `down` afterwards whatever happened, so no VM is left running."""
    _require_vm_host()
    status = vm("status", str(VM_DIR), timeout=30, check=False)
    if status.returncode == 0:
        pytest.skip(f"a VM from {VM_DIR} is already running; stop it with `scripts/vm.sh down` to run this test")
    phases.run("build", vm, "build", str(VM_DIR), timeout=1800)
    try:
        phases.run("boot", vm, "up", str(VM_DIR), timeout=600)
        yield
    finally:
        phases.run("down", vm, "down", str(VM_DIR), timeout=180, check=False)


def test_the_readme_vm_recipe_runs_the_factory_and_proves_containment_inside_the_vm(
    booted_vm: None, phases: Phases
) -> None:
    phases.run("push", vm, "push", str(VM_DIR), timeout=300)

    preloaded = False
    if phases.run("host_images", _host_images_ready):
        host_ids = _image_ids(["docker", "image", "inspect", "--format", "{{.Id}}", *IMAGES])
        guest_ids = guest(f"docker image inspect --format '{{{{.Id}}}}' {' '.join(IMAGES)}", 120, check=False)
        if host_ids and guest_ids.returncode == 0 and guest_ids.stdout.split() == host_ids:
            preloaded = True  # loaded by an earlier run; the IDs match this machine's
        elif host_ids:

            def load() -> None:
                save = subprocess.Popen(["docker", "save", *IMAGES], stdout=subprocess.PIPE)
                loaded = subprocess.run(
                    ["bash", str(VM_SH), "ssh", str(VM_DIR), "--", "docker load"],
                    stdin=save.stdout,
                    capture_output=True,
                    text=True,
                    timeout=1200,
                    check=False,
                )
                assert save.stdout is not None
                save.stdout.close()
                assert save.wait(timeout=60) == 0, "docker save failed"
                assert loaded.returncode == 0, loaded.stderr[-3000:]

            phases.run("load_images", load)
            preloaded = True

    demo = phases.run("demo", guest, "cd /root/gastown_mcp && COLUMNS=200 make demo 2>&1", 2400, check=False)
    out = demo.stdout
    assert demo.returncode == 0 and "all beads done: 6/6" in out, f"make demo in the VM failed:\n{out[-6000:]}"
    if preloaded:
        # Image IDs survive save/load, so the guest's build finds both images up to date instead of rebuilding.
        assert "base image gastown-base:bookworm is up to date" in out, out[-6000:]
        assert "agent image gastown-agent:latest is up to date" in out, out[-6000:]

    doctor = phases.run(
        "doctor", guest, "cd /root/gastown_mcp && .venv/bin/gastown doctor --sandbox --json", 900, check=False
    )
    try:
        checks = json.loads(doctor.stdout)
    except ValueError:
        pytest.fail(f"gastown doctor --sandbox in the VM printed no JSON:\n{doctor.stdout}\n{doctor.stderr}")
    failed = [c for c in checks if not c["passed"]]
    assert doctor.returncode == 0 and not failed, json.dumps(failed or checks, indent=2)
    names = {c["name"] for c in checks}
    assert {"rootfs_read_only", "capabilities_empty", "no_route_to_internet", "other_agent_unreachable"} <= names

    # Minimal Debian turns AppArmor on but may lack the apparmor package; then Docker refuses every container
    # (the profile cannot be loaded without apparmor_parser) until scripts/install-docker.sh installs it.
    def without_apparmor() -> None:
        guest(
            "DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq apparmor >/dev/null"
            " && printf docker-default > /sys/kernel/security/apparmor/.remove",
            300,
        )
        refused = guest("docker run --rm gastown-base:bookworm true 2>&1", 120, check=False)
        assert refused.returncode != 0 and "apparmor" in refused.stdout.lower(), refused.stdout
        fixed = guest("cd /root/gastown_mcp && bash scripts/install-docker.sh 2>&1", 1200)
        assert "installing: apparmor" in fixed.stdout, fixed.stdout
        guest("docker run --rm gastown-base:bookworm true", 120)

    phases.run("apparmor", without_apparmor)

    # The guest's engine confines containers with AppArmor and seccomp too, and its kernel is not this machine's.
    security = guest("docker info --format '{{json .SecurityOptions}}'", 120).stdout
    assert "apparmor" in security and "seccomp" in security, security
    assert guest("hostname", 60).stdout.strip() == "gastown-vm"
    assert guest("uname -r", 60).stdout.strip() != os.uname().release
