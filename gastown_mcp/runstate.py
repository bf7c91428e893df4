"""Where a running town listens: the state file `gastown up` writes and every other command reads.

A command run beside a running town (`gastown agent spawn`, `gastown down`) finds its URLs and network here,
so it attaches to the same town instead of starting a second one.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import BaseModel

from gastown_mcp.config import Settings

STATE_FILE = "run/town.json"


class RunState(BaseModel):
    """Where a running town listens; written by `gastown up`, read by other commands."""

    pid: int
    started_at: float
    mcp_url: str
    gateway_url: str
    agent_mcp_url: str | None = None
    agent_gateway_url: str | None = None
    network: str | None = None
    pid_namespace: str | None = None  # a town in a container (compose.yaml) has a pid only it can signal
    dashboard_url: str | None = None  # the operator's dashboard (and /metrics), when `[dashboard] enabled`

    @property
    def foreign(self) -> bool:
        """The town runs in another PID namespace, so `pid` means nothing here."""
        return self.pid_namespace is not None and self.pid_namespace != pid_namespace()


def pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def state_path(settings: Settings) -> Path:
    return settings.town_dir / STATE_FILE


def read_state(settings: Settings) -> RunState | None:
    """The running town's state, or None when no town process is alive for this directory."""
    path = state_path(settings)
    if not path.exists():
        return None
    try:
        state = RunState.model_validate_json(path.read_text())
    except ValueError:
        return None
    if state.foreign:
        return state if _answers(state.mcp_url) else None
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return state


def _answers(url: str) -> bool:
    """Something listens on the host and port of `url` (how to tell a town in a container is alive)."""
    host, _, port = url.split("/")[2].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False
