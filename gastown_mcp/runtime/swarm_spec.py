"""What a swarm service for one agent looks like, and what its task says about the agent: pure functions.

`service_spec` turns a `LaunchSpec` into the engine's service definition with the same containment as a local
container (read-only root, no capabilities, no new privileges, memory, CPU, pids and open-file limits, capped
tmpfs, an init, the wall clock, no DNS upstream); `task_status` reads a task back as a `ContainerStatus`,
counting a task on a node that is down as killed. No engine is called here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from gastown_mcp.errors import Forbidden
from gastown_mcp.runtime.protocol import (
    LABEL_AGENT,
    LABEL_DEADLINE,
    LABEL_GENERATION,
    LABEL_ROLE,
    LABEL_TOWN,
    WORK_DIR,
    ContainerStatus,
    ExitReason,
    LaunchSpec,
)

ENTRYPOINT = "/opt/gastown/entrypoint.sh"
# The engine before API 1.46 cannot set no-new-privileges on a service; util-linux's setpriv (in every Debian
# image) sets it before the entrypoint runs, so nothing in the container can gain privileges through exec.
NO_NEW_PRIVS = ("/usr/bin/setpriv", "--no-new-privs", "--")
NO_RESOLVER = "127.0.0.1"
TOWN_ALIAS = "town"  # the relay's name on every agent network: agents reach the town at http://town:PORT
STOP_GRACE_NS = 10 * 10**9
PENDING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
WORK_MB = 2048

# Runs in the agent container before its command: the agent's repository comes from the town over git smart
# HTTP with its own token into /work/repo (memory: it dies with the container), and every commit or rewrite of
# its branch goes back the same way (the hooks below), so completing a bead finds the work at the town exactly
# as a local hand-in would. The repository is not /work itself: the engine gives a tmpfs over a directory of
# the image that directory's owner (root) whatever mode is asked for.
WORK_REPO = f"{WORK_DIR}/repo"
# Likewise the agent's home: /home/agent in the image would come up owned by root, so HOME is a fresh path.
SWARM_HOME = "/run/gastown-home"
HOOKS_DIR = "/opt/gastown-git/hooks"
# Claude Code's session (the transcript a resume continues) travels through the town as well: the hooks, and
# the script below when the agent's command ends, commit `~/.claude/projects` to a branch of the agent's own
# (the town takes only branches under `polecat/<agent>/`) and push it; a resumed agent's container, on any
# node, checks it out into its fresh home before Claude Code starts.
SESSION_BRANCH = "polecat/$GASTOWN_AGENT/claude-session"
WORKSPACE_SCRIPT = rf"""set -eu
if [ -z "${{GASTOWN_GIT_URL:-}}" ]; then
  [ "$#" -gt 0 ] || set -- /opt/gastown/run-claude.sh
  exec "$@"
fi
auth="Authorization: Bearer ${{GASTOWN_TOKEN:?}}"
branch="${{GASTOWN_BRANCH:?GASTOWN_BRANCH is needed with GASTOWN_GIT_URL}}"
git -c http.extraHeader="$auth" clone --quiet --no-tags --branch "$branch" "$GASTOWN_GIT_URL" {WORK_REPO}
cd {WORK_REPO}
git config http.extraHeader "$auth"
git config core.hooksPath {HOOKS_DIR}
git branch --quiet main origin/main 2>/dev/null || true
session="origin/{SESSION_BRANCH}"
if [ -n "${{GASTOWN_RESUME:-}}" ] && git rev-parse -q --verify "$session" >/dev/null; then
  mkdir -p "$HOME/.claude"
  GIT_INDEX_FILE="$(mktemp -u)" git --work-tree="$HOME/.claude" checkout "$session" -- .
fi
[ "$#" -gt 0 ] || set -- /opt/gastown/run-claude.sh
# The command runs as a child, so that when it ends (or is stopped: the signal is passed on) the session is
# saved at the town before the container goes.
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
set +e
wait "$child"
status=$?
while [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; do
  wait "$child"
  status=$?
done
sh {HOOKS_DIR}/post-commit
exit "$status"
"""
# The hooks come as a swarm config (a read-only file the engine mounts with exec allowed): a tmpfs of this
# engine's service API is always noexec, so a hook written into the repository could not run.
PUSH_HOOK = f"""#!/bin/sh
git push --quiet origin "+refs/heads/$GASTOWN_BRANCH:refs/heads/$GASTOWN_BRANCH" >&2 \\
  || echo "gastown: pushing $GASTOWN_BRANCH to the town failed" >&2
[ -d "$HOME/.claude/projects" ] || exit 0
index="$(mktemp -u)"
GIT_INDEX_FILE="$index" git --work-tree="$HOME/.claude" add -A -- projects \\
  && tree="$(GIT_INDEX_FILE="$index" git write-tree)" \\
  && commit="$(echo session | git -c user.name=gastown -c user.email=gastown@localhost commit-tree "$tree")" \\
  && git push --quiet origin "+$commit:refs/heads/{SESSION_BRANCH}" >&2 \\
  || echo "gastown: saving the Claude Code session to the town failed" >&2
rm -f "$index"
"""
HOOKS = ("post-commit", "post-rewrite")


def service_name(town: str, agent: str) -> str:
    return f"gastown-{town}-{agent}"


def service_spec(
    spec: LaunchSpec,
    image_id: str,
    network: str,
    now: float,
    placement: Sequence[str] = (),
    work_mb: int = WORK_MB,
    hook_config: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of the engine's `create_service` for one agent on `network` (its own overlay).

    The image is named by its ID, so a node never tries a registry: it runs what `docker load` gave it.
    `hook_config` is the (id, name) of the swarm config holding `PUSH_HOOK`."""
    if spec.mounts:
        raise Forbidden(
            f"agent {spec.agent}: host paths cannot be mounted into a container on another machine; "
            "on the swarm an agent gets its repository over the town's git endpoint (GASTOWN_GIT_URL)"
        )
    limits = spec.limits
    labels = {
        LABEL_TOWN: spec.town,
        LABEL_AGENT: spec.agent,
        LABEL_ROLE: spec.role,
        LABEL_DEADLINE: f"{now + limits.wallclock_s:.3f}",
        LABEL_GENERATION: str(spec.generation),
    }
    env = {
        **spec.env,
        "GASTOWN_TOWN": spec.town,
        "GASTOWN_AGENT": spec.agent,
        "GASTOWN_ROLE": spec.role,
        "GASTOWN_WALLCLOCK_SECONDS": str(limits.wallclock_s),
        "HOME": SWARM_HOME,
    }

    def tmpfs(target: str, size_mb: int) -> dict[str, Any]:
        # The service API (before 1.46) takes only a size and a mode: sticky and world-writable, since the
        # agent user is the only user in the container.
        return {"Type": "tmpfs", "Target": target, "TmpfsOptions": {"SizeBytes": size_mb * 2**20, "Mode": 0o1777}}

    container = {
        "Image": image_id,
        "Command": [*NO_NEW_PRIVS, ENTRYPOINT],
        "Args": ["sh", "-c", WORKSPACE_SCRIPT, "gastown-workspace", *spec.command],
        "Hostname": spec.agent[:63],
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Dir": spec.workdir,
        "User": f"{spec.uid}:{spec.gid}",
        "Labels": labels,
        "ReadOnly": True,
        "Mounts": [tmpfs("/tmp", limits.tmp_mb), tmpfs(SWARM_HOME, limits.home_mb), tmpfs(WORK_REPO, work_mb)],
        "Init": True,
        "CapabilityDrop": ["ALL"],
        "Ulimits": [{"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile}],
        "StopGracePeriod": STOP_GRACE_NS,
        # See docker_backend.run_kwargs: the embedded resolver forwards to the agent's own loopback only.
        "DNSConfig": {"Nameservers": [NO_RESOLVER], "Search": ["."], "Options": ["timeout:1", "attempts:1"]},
    }
    if hook_config is not None:
        container["Configs"] = [
            {
                "ConfigID": hook_config[0],
                "ConfigName": hook_config[1],
                "File": {"Name": f"{HOOKS_DIR}/{hook}", "UID": str(spec.uid), "GID": str(spec.gid), "Mode": 0o555},
            }
            for hook in HOOKS
        ]
    memory = limits.memory_mb * 2**20
    task_template = {
        "ContainerSpec": container,
        "Resources": {
            "Limits": {"NanoCPUs": int(limits.cpus * 1e9), "MemoryBytes": memory, "Pids": limits.pids},
            # The scheduler places an agent only where its memory limit fits beside the others.
            "Reservations": {"MemoryBytes": memory},
        },
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": list(placement)},
        "Networks": [{"Target": network}],
        "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "2"}},
    }
    return {
        "task_template": task_template,
        "name": service_name(spec.town, spec.agent),
        "labels": labels,
        "mode": {"Replicated": {"Replicas": 1}},
        # No virtual IP (this kernel may lack IPVS) and no published port: nothing reaches an agent.
        "endpoint_spec": {"Mode": "dnsrr"},
    }


def parse_time(value: str | None) -> float | None:
    if not value or value.startswith("0001-01-01"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}.{digits or '0'}+00:00").timestamp()


def task_status(
    labels: Mapping[str, str],
    service_id: str,
    task: Mapping[str, Any] | None,
    node_up: Mapping[str, bool],
    exit_reason: Any,
) -> ContainerStatus:
    """An agent's status from its newest task. A task whose node is down is gone with it: exited, killed.

    `node_up` maps node IDs to whether the node is ready; `exit_reason` is the local backend's rule."""
    deadline = float(labels[LABEL_DEADLINE]) if labels.get(LABEL_DEADLINE) else None
    base = ContainerStatus(
        agent=labels.get(LABEL_AGENT, ""),
        town=labels.get(LABEL_TOWN, ""),
        role=labels.get(LABEL_ROLE, ""),
        container_id=service_id,
        state="created",
        deadline=deadline,
        generation=int(labels.get(LABEL_GENERATION) or 0),
    )
    if task is None:
        return base
    status: Mapping[str, Any] = task.get("Status") or {}
    raw = str(status.get("State", ""))
    stamp = parse_time(status.get("Timestamp"))
    attachments = task.get("NetworksAttachments") or []
    addresses = [a.split("/")[0] for n in attachments for a in (n.get("Addresses") or [])]
    base = replace(base, address=addresses[0] if addresses else None)
    node = task.get("NodeID")
    lost = bool(node) and not node_up.get(str(node), False)
    if raw in PENDING or raw == "running":
        if lost and raw not in ("new", "allocated", "pending"):
            # The node stopped answering: its containers are gone or cut off, and nothing restarts them.
            return replace(base, state="exited", reason="killed", finished_at=stamp)
        if raw == "running":
            return replace(base, state="running", started_at=stamp)
        return base
    code: int | None = None
    reason: ExitReason
    container = status.get("ContainerStatus") or {}
    if container.get("ExitCode") is not None and raw != "rejected":
        code = int(container["ExitCode"])
        reason = exit_reason(code, False, stamp, deadline)
    else:
        past = deadline is not None and stamp is not None and stamp >= deadline
        reason = "wallclock" if past else ("killed" if raw == "shutdown" else "failed")
    return replace(base, state="exited", exit_code=code, reason=reason, finished_at=stamp)
