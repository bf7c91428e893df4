"""Freezing swarm agents in place (an emergency stop): `docker pause` of an agent's task container on its node,
through that node's own engine.

The manager's API cannot do it: a service has no paused state (scaling to 0 kills the task), and the swarm
never forwards container calls to the node running a task. A node's engine answers on its own unix socket
only, so the town reaches it the way an operator does: a command the town is given (`[runtime]
swarm_node_docker`, e.g. `ssh {hostname} docker` or `docker -H ssh://gastown@{address}`), with the node's
hostname and address filled in. Without one, an emergency stop holds the gateway and dispatch only.
"""

from __future__ import annotations

import shlex
import subprocess

from gastown_mcp.errors import InvalidInput

NODE_TIMEOUT_S = 30.0


def node_command(template: str, hostname: str, address: str) -> list[str]:
    """The node's docker command line: `template` split like a shell would, `{hostname}`/`{address}` filled."""
    try:
        return [part.format(hostname=hostname, address=address) for part in shlex.split(template)]
    except (ValueError, KeyError, IndexError) as exc:
        raise InvalidInput(
            f"[runtime] swarm_node_docker = {template!r} is not a command with only {{hostname}} and {{address}} "
            f"in it ({exc}); for example 'ssh {{hostname}} docker'"
        ) from None


def node_docker(template: str, hostname: str, address: str, *args: str) -> tuple[bool, str]:
    """Run `docker ARGS` on the node; whether it succeeded, and its output (or why not)."""
    command = [*node_command(template, hostname, address), *args]
    try:
        done = subprocess.run(command, capture_output=True, timeout=NODE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{' '.join(command[:3])}...: {exc}"
    text = (done.stdout if done.returncode == 0 else done.stderr).decode(errors="replace").strip()
    return done.returncode == 0, text
