"""The fleet: spawning, stopping and slinging work to agents that run in containers (part of the town API).

`Fleet` composes the store, the rigs' git worktrees and a `Runtime`. `Town` checks permissions and calls it.
A spawned agent gets a name from the pool, an MCP token and a gateway key, a worktree on its own branch, and a
hardened container that reaches only the town's MCP endpoint and the gateway. Its Claude Code state lives in
`<town>/agents/<name>/claude` (mounted at ~/.claude) under a session id the fleet picks, so a session that
has ended can be resumed in a fresh container with `resume()` (how a nudge reaches an exited agent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gastown_mcp.errors import Conflict, Forbidden, GastownError, InvalidInput, NotFound, RuntimeUnavailable
from gastown_mcp.models import Agent, AgentState, Bead, BeadStatus, MessageKind, Role
from gastown_mcp.runtime import worktrees
from gastown_mcp.runtime.protocol import (
    AGENT_GID,
    AGENT_HOME,
    AGENT_UID,
    ContainerStatus,
    LaunchSpec,
    Limits,
    Mount,
    Runtime,
)
from gastown_mcp.store import Store

NAME_POOL = (
    "nux", "slit", "rictus", "toast", "capable", "dag", "cheedo", "angharad", "furiosa", "ace", "morsov",
    "keeper", "valkyrie", "max", "immortan", "scrotus", "corpus", "miss-giddy", "organic", "bullet",
)  # fmt: skip


@dataclass(frozen=True)
class FleetConfig:
    """Where spawned agents find the town, and how much they may use (limits by role)."""

    town: str
    town_dir: Path
    mcp_url: str
    gateway_url: str | None = None
    network: str | None = None
    image: str = "gastown-agent:latest"
    limits: Mapping[str, Limits] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)


class Fleet:
    def __init__(self, store: Store, runtime: Runtime, config: FleetConfig) -> None:
        self.store = store
        self.runtime = runtime
        self.config = config

    def pick_name(self, role: Role) -> str:
        taken = self.store.agents.names()
        for name in NAME_POOL:
            if name not in taken:
                return name
        n = 1
        while f"{role.value}-{n}" in taken:
            n += 1
        return f"{role.value}-{n}"

    def spawn(
        self,
        actor: str,
        role: Role,
        *,
        rig: str | None = None,
        bead: str | None = None,
        command: Sequence[str] = (),
        limits: Limits | None = None,
        lease_seconds: float = 600.0,
        name: str | None = None,
        max_attempts: int | None = None,
    ) -> Agent:
        """Create the agent, its worktree (with a rig) and its container; with `bead`, put it on the hook.

        A spawn that fails gives the bead back as a failed attempt; once it has `max_attempts` of them it is
        blocked, so a container that can never start does not get relaunched forever.
        """
        rig_obj = worktrees.get_rig(self.config.town_dir, rig) if rig else None
        if bead is not None:
            self._check_slingable(bead)
        name = name or self.pick_name(role)
        creds = self.store.agents.create(actor, name, role, rig)
        limits = limits or self.config.limits.get(role.value) or Limits()
        meta: dict[str, object] = {
            "session_id": str(uuid.uuid4()),
            "command": list(command),
            "limits": dataclasses.asdict(limits),
        }
        try:
            mounts: list[Mount] = []
            if rig_obj is not None:
                worktree = worktrees.create_worktree(rig_obj, name, bead)
                meta.update(worktree=str(worktree.path), branch=worktree.branch)
                mounts = worktree.mounts()
            mounts.append(self._claude_home(name, fresh=True))
            if bead is not None:
                self.store.beads.claim(name, bead, lease_seconds)
                meta["hook"] = bead
            status = self._launch(name, role, creds.token, creds.gateway_key, meta, mounts, limits, {})
        except BaseException as exc:
            blocked = self._undo_spawn(actor, name, bead, rig_obj, exc, max_attempts)
            if blocked is not None and isinstance(exc, GastownError):
                raise type(exc)(f"{exc}; bead {bead} is now blocked after {blocked.attempts} failed attempts") from exc
            raise
        meta["container"] = status.container_id
        return self.store.agents.set_state(actor, name, AgentState.running, "spawned", **meta)

    def resume(self, actor: str, name: str, prompt: str) -> Agent:
        """Start an exited agent's Claude Code session again in a fresh container, with `prompt` as its next turn.

        Same worktree, branch and session (its transcript survived in `<town>/agents/<name>/claude`); the old
        container is removed and the agent gets new credentials, since only their hashes are kept.
        """
        agent = self.store.agents.get(name)
        session = agent.metadata.get("session_id")
        if not session or agent.metadata.get("container") is None:
            raise InvalidInput(f"{name} has no recorded Claude Code session to resume; spawn a new agent instead")
        if agent.state is not AgentState.exited:
            raise Conflict(f"{name} is {agent.state.value}; only an exited agent's session can be resumed")
        if not prompt.strip():
            raise InvalidInput("resuming a session needs a prompt: the text the agent should act on next")
        self.runtime.remove(self.config.town, name)
        creds = self.store.agents.rotate(actor, name)
        meta = dict(agent.metadata)
        limits = Limits(**meta["limits"]) if isinstance(meta.get("limits"), dict) else Limits()
        mounts: list[Mount] = []
        if agent.rig and meta.get("worktree"):
            mounts = _existing_worktree_mounts(worktrees.get_rig(self.config.town_dir, agent.rig), name, meta)
        mounts.append(self._claude_home(name, fresh=False))
        extra = {"GASTOWN_RESUME": str(session), "GASTOWN_PROMPT": prompt}
        status = self._launch(name, agent.role, creds.token, creds.gateway_key, meta, mounts, limits, extra)
        resumes = int(str(meta.get("resumes", 0))) + 1
        return self.store.agents.set_state(
            actor,
            name,
            AgentState.running,
            "resumed",
            container=status.container_id,
            resumes=resumes,
            resumed_at=time.time(),
            exit_reason=None,
            exit_code=None,
        )

    def _launch(
        self,
        name: str,
        role: Role,
        token: str,
        gateway_key: str,
        meta: Mapping[str, object],
        mounts: Sequence[Mount],
        limits: Limits,
        extra_env: Mapping[str, str],
    ) -> ContainerStatus:
        bead, branch = meta.get("hook"), meta.get("branch")
        env = {
            "GASTOWN_AGENT": name,
            "GASTOWN_ROLE": role.value,
            "GASTOWN_MCP_URL": self.config.mcp_url,
            "GASTOWN_TOKEN": token,
            "GASTOWN_SESSION_ID": str(meta["session_id"]),
            **({"GASTOWN_BEAD": str(bead)} if bead else {}),
            **({"GASTOWN_BRANCH": str(branch)} if branch else {}),
            **self.config.extra_env,
            **extra_env,
        }
        if self.config.gateway_url:
            env["ANTHROPIC_BASE_URL"] = self.config.gateway_url
            env["ANTHROPIC_AUTH_TOKEN"] = gateway_key
        command = meta.get("command")
        spec = LaunchSpec(
            town=self.config.town,
            agent=name,
            role=role.value,
            image=self.config.image,
            command=tuple(str(c) for c in command) if isinstance(command, list) else (),
            env=env,
            mounts=tuple(mounts),
            network=self.config.network,
            limits=limits,
        )
        return self.runtime.launch(spec)

    def _claude_home(self, name: str, *, fresh: bool) -> Mount:
        """The agent's ~/.claude on the host, owned by the agent user: sessions outlive their container."""
        path = Path(self.config.town_dir).resolve() / "agents" / name / "claude"
        if fresh and path.exists():
            shutil.rmtree(path)  # a new agent with a reused name starts without the old one's sessions
        path.mkdir(parents=True, exist_ok=True)
        try:
            os.chown(path, AGENT_UID, AGENT_GID)
        except PermissionError as exc:
            raise Forbidden(
                f"cannot hand {path} to the agent user (uid {AGENT_UID}): run the town as root or as uid {AGENT_UID}"
            ) from exc
        path.chmod(0o700)
        return Mount(path, f"{AGENT_HOME}/.claude", read_only=False)

    def _undo_spawn(
        self,
        actor: str,
        name: str,
        bead: str | None,
        rig: worktrees.Rig | None,
        exc: BaseException,
        max_attempts: int | None,
    ) -> Bead | None:
        """A spawn that failed half way leaves nothing behind but the audit trail (and any branch).

        Returns the bead if giving it back blocked it.
        """
        blocked = None
        with contextlib.suppress(GastownError):
            if bead is not None and self.store.beads.get(bead).assignee == name:
                why = f"spawn of {name} failed: {exc}"
                back = self.store.beads.release(actor, bead, why[:2000], None, block_after=max_attempts)
                blocked = back if back.status is BeadStatus.blocked else None
        if rig is not None:
            with contextlib.suppress(Exception):
                worktrees.remove_worktree(rig, name)
        with contextlib.suppress(GastownError):
            self.store.agents.set_state(actor, name, AgentState.removed, f"spawn failed: {exc}")
        return blocked

    def _check_slingable(self, bead_id: str) -> Bead:
        bead = self.store.beads.get(bead_id)
        if bead.status is not BeadStatus.open or bead.blocked_by:
            why = f"waits on {', '.join(bead.blocked_by)}" if bead.blocked_by else f"is {bead.status.value}"
            raise Conflict(f"bead {bead_id} {why}; only open, unblocked beads can go on a hook")
        return bead

    def sling(
        self, actor: str, bead_id: str, target: str, lease_seconds: float = 600.0, max_attempts: int | None = None
    ) -> Agent:
        """Put a bead on an agent's hook: a running agent's name, or a rig (spawns a polecat for it)."""
        agent = self.store.agents.find(target)
        if agent is None or agent.state is AgentState.removed:
            if target in {r.name for r in worktrees.list_rigs(self.config.town_dir)}:
                return self.spawn(
                    actor,
                    Role.polecat,
                    rig=target,
                    bead=bead_id,
                    lease_seconds=lease_seconds,
                    max_attempts=max_attempts,
                )
            raise NotFound(f"no agent or rig named {target!r}; see `gastown agent ls` and `gastown rig list`")
        if agent.state not in (AgentState.running, AgentState.idle, AgentState.nudged):
            raise InvalidInput(f"{target} is {agent.state.value}; sling to a running agent or to a rig")
        self._check_slingable(bead_id)
        self.store.beads.claim(target, bead_id, lease_seconds)
        self.store.messages.send(
            actor, target, MessageKind.nudge, f"Bead {bead_id} is on your hook: claim it and work it."
        )
        return self.store.agents.set_state(actor, target, agent.state, "slung", hook=bead_id)

    def stop(self, actor: str, name: str, reason: str) -> Agent:
        """Stop the agent's container and give its beads back to the queue; its branch is kept."""
        agent = self.store.agents.get(name)
        status: ContainerStatus | None = None
        with contextlib.suppress(NotFound):
            status = self.runtime.stop(self.config.town, name)
        for held in self.store.beads.held_by(name):
            self.store.beads.release(actor, held.id, f"{name} stopped: {reason}", None)
        meta: dict[str, object] = {"exit_reason": "stopped"}
        if status is not None:
            meta["exit_code"] = status.exit_code
        return self.store.agents.set_state(actor, agent.name, AgentState.exited, reason or "stopped", **meta)

    def logs(self, name: str, tail: int = 200) -> str:
        self.store.agents.get(name)
        try:
            return self.runtime.logs(self.config.town, name, tail)
        except NotFound:
            return ""

    def cleanup_orphans(self) -> list[str]:
        """Remove containers of this town whose agent row is gone or removed (after a crash of the town)."""
        known = {a.name for a in self.store.agents.all()}
        removed = []
        try:
            for status in self.runtime.list(self.config.town):
                if status.agent not in known:
                    self.runtime.remove(self.config.town, status.agent)
                    removed.append(status.agent)
        except RuntimeUnavailable:
            return []
        return removed


def _existing_worktree_mounts(rig: worktrees.Rig, name: str, meta: Mapping[str, object]) -> list[Mount]:
    """The mounts of a worktree `spawn` made earlier (it is still on disk with its branch)."""
    path = Path(str(meta["worktree"]))
    pointer = (path / ".git").read_text().strip()
    if not pointer.startswith("gitdir: "):
        raise GastownError(f"unexpected .git file in {path}: {pointer!r}; spawn a new agent instead")
    git_dir = Path(pointer.removeprefix("gitdir: "))
    branch = str(meta.get("branch") or worktrees.branch_name(name, None))
    return worktrees.Worktree(rig, name, branch, path, git_dir).mounts()
