"""The fleet: spawning, stopping, slinging work to and resuming agents that run in containers.

`Fleet` composes the store, the agents' own repositories (`rigs`) and a `Runtime`; `FleetAPI` is its face on
`Town`, which checks permissions first. Nothing outside `town/` holds the runtime.
A spawned agent gets a name from the pool, an MCP token and a gateway key, a repository of its own, and a
hardened container that reaches only the town's MCP endpoint and the gateway. Its Claude Code state lives in
`<town>/agents/<name>/claude` (mounted at ~/.claude) under a session id the fleet picks, so a session that
has ended can be resumed in a fresh container with `resume()` (how a nudge reaches an exited agent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gastown_mcp import disks, rigs
from gastown_mcp.config import Settings
from gastown_mcp.errors import Conflict, GastownError, InvalidInput, NotFound, RuntimeUnavailable
from gastown_mcp.models import Agent, AgentState, Bead, BeadStatus, BeadSummary, Message, MessageKind, Role
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
from gastown_mcp.town import guard
from gastown_mcp.town.agents import AgentsAPI
from gastown_mcp.town.mail import MailAPI

RIG_LABEL = "rig:"  # a bead labelled rig:<name> is dispatched to that rig
NAME_POOL = (
    "nux", "slit", "rictus", "toast", "capable", "dag", "cheedo", "angharad", "furiosa", "ace", "morsov",
    "keeper", "valkyrie", "max", "immortan", "scrotus", "corpus", "miss-giddy", "organic", "bullet",
)  # fmt: skip


@dataclass(frozen=True)
class Carried:
    """One piece of intent the reconciler carried out (or failed to)."""

    verb: str  # launched, stopped, failed
    agent: str
    rig: str | None
    detail: str


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
    agent_uid: int = AGENT_UID  # `[runtime] agent_uid`/`agent_gid`: the ids agents run as and own files by
    agent_gid: int = AGENT_GID
    # Set for agents on other machines (the swarm): their repository comes over git smart HTTP from here
    # (`<git_url>/<agent>.git`, town/workspaces.py) instead of bind mounts, and no host directory is mounted.
    git_url: str | None = None


class Fleet:
    def __init__(self, store: Store, runtime: Runtime, config: FleetConfig) -> None:
        self.store = store
        self.runtime = runtime
        self.config = config

    def launch(self, actor: str, name: str, lease_seconds: float, max_attempts: int | None = None) -> Agent | None:
        """Start a requested agent: its own repository (with a rig), credentials, and its container.

        None when another reconciler began it first. A launch that fails gives the bead back as a failed
        attempt; once it has `max_attempts` of them it is blocked, so a container that can never start is not
        relaunched forever.
        """
        agent = self.store.launches.begin(actor, name)
        if agent is None:
            return None
        meta = dict(agent.metadata)
        bead = str(meta["hook"]) if meta.get("hook") else None
        limits = Limits(**meta["limits"]) if isinstance(meta.get("limits"), dict) else Limits()
        rig_obj = rigs.get_rig(self.config.town_dir, agent.rig) if agent.rig else None
        try:
            own = disks.agent_dir(self.config.town_dir, name, limits.disk_mb, fresh=True)  # capped, emptied
            mounts: list[Mount] = []
            if rig_obj is not None:
                # A bead handed back by the merge queue continues from its last hand-in, not from scratch.
                start = self.store.beads.get(bead).metadata.get("rework_from") if bead else None
                repo = rigs.create_agent_repo(
                    rig_obj,
                    name,
                    bead,
                    start=str(start) if start else None,
                    owner=(self.config.agent_uid, self.config.agent_gid),
                )
                meta.update(worktree=str(repo.path), branch=repo.branch)
                mounts = repo.mounts()
            mounts.append(self._claude_home(own))
            if self.config.git_url:
                meta["workspace"], mounts = "http", []
            if bead is not None:
                self.store.beads.claim(name, bead, lease_seconds)  # a renewal: the lease starts now
            creds = self.store.agents.rotate(actor, name)
            status = self._launch(name, agent.role, creds.token, creds.gateway_key, meta, mounts, limits, {})
        except BaseException as exc:
            blocked = self._undo_spawn(actor, name, bead, rig_obj, exc, max_attempts)
            if blocked is not None and isinstance(exc, GastownError):
                raise type(exc)(f"{exc}; bead {bead} is now blocked after {blocked.attempts} failed attempts") from exc
            raise
        meta["container"] = status.container_id
        return self.store.agents.set_state(actor, name, AgentState.running, "spawned", **meta)

    def started_elsewhere(self, name: str, timeout_s: float = 60.0) -> Agent:
        """The agent a concurrent launcher (the reconciler) began first, once that launch is done: callers get
        the same answer whoever carried the intent out."""
        deadline = time.monotonic() + timeout_s
        agent = self.store.agents.get(name)
        while agent.state in (AgentState.requested, AgentState.starting) and time.monotonic() < deadline:
            time.sleep(0.05)
            agent = self.store.agents.get(name)
        return agent

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
        """Request an agent and launch it at once (this process holds the runtime)."""
        agent = request_agent(
            self.store,
            self.config.town_dir,
            self.config.limits,
            actor,
            role,
            rig=rig,
            bead=bead,
            command=command,
            limits=limits,
            lease_seconds=lease_seconds,
            name=name,
        )
        return self.launch(actor, agent.name, lease_seconds, max_attempts) or self.started_elsewhere(agent.name)

    def resume(self, actor: str, name: str, prompt: str) -> Agent:
        """Start an exited agent's Claude Code session again in a fresh container, with `prompt` as its next turn.

        Same repository, branch and session (its transcript survived in `<town>/agents/<name>/claude`); the old
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
        # Starting, not exited, from here on: an exited agent without a container is an orphan to the dogs,
        # which would remove its repository while the new container (seconds away on a swarm) clones it.
        self.store.agents.set_state(actor, name, AgentState.starting, "resuming")
        try:
            return self._resume(actor, agent, str(session), prompt)
        except BaseException:
            self.store.agents.set_state(actor, name, AgentState.exited, "resume failed")
            raise

    def _resume(self, actor: str, agent: Agent, session: str, prompt: str) -> Agent:
        name = agent.name
        self.runtime.remove(self.config.town, name)
        creds = self.store.agents.rotate(actor, name)
        meta = dict(agent.metadata)
        meta["generation"] = int(meta.get("generation") or 0) + 1
        limits = Limits(**meta["limits"]) if isinstance(meta.get("limits"), dict) else Limits()
        own = disks.agent_dir(self.config.town_dir, name, limits.disk_mb, fresh=False)
        mounts: list[Mount] = []
        if agent.rig and meta.get("worktree"):
            rig = rigs.get_rig(self.config.town_dir, agent.rig)
            branch = str(meta.get("branch") or rigs.branch_name(name, None))
            owner = (self.config.agent_uid, self.config.agent_gid)
            mounts = rigs.open_agent_repo(rig, name, branch, owner).mounts()
        mounts.append(self._claude_home(own))
        if self.config.git_url:
            mounts = []  # over the network: the repository at the town is what it pushed
        extra = {"GASTOWN_RESUME": str(session), "GASTOWN_PROMPT": prompt}
        status = self._launch(name, agent.role, creds.token, creds.gateway_key, meta, mounts, limits, extra)
        resumes = int(str(meta.get("resumes", 0))) + 1
        return self.store.agents.set_state(
            actor,
            name,
            AgentState.running,
            "resumed",
            container=status.container_id,
            generation=meta["generation"],
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
            **({"GASTOWN_TASK": str(meta["task"])} if meta.get("task") else {}),
            **({"GASTOWN_WAIT": "1"} if meta.get("wait") else {}),
            **({"GASTOWN_BRANCH": str(branch)} if branch else {}),
            **({"GASTOWN_GIT_URL": f"{self.config.git_url}/{name}.git"} if self.config.git_url and branch else {}),
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
            generation=int(str(meta.get("generation") or 0)),
            uid=self.config.agent_uid,
            gid=self.config.agent_gid,
        )
        return self.runtime.launch(spec)

    def _claude_home(self, agent_dir: Path) -> Mount:
        """The agent's ~/.claude on the host, in its own directory (a fresh launch emptied that, so a reused name
        starts without the old agent's sessions), owned by the agent user: sessions outlive their container."""
        path = agent_dir / "claude"
        path.mkdir(exist_ok=True)
        owner = (self.config.agent_uid, self.config.agent_gid)
        if not rigs.owned_by(path, owner):  # new, or a session kept from other agent ids (an upgraded town)
            rigs.chown_tree(path, owner)
        path.chmod(0o700)
        return Mount(path, f"{AGENT_HOME}/.claude", read_only=False)

    def _undo_spawn(
        self,
        actor: str,
        name: str,
        bead: str | None,
        rig: rigs.Rig | None,
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
                rigs.remove_agent_repo(rig, name)
        with contextlib.suppress(GastownError):
            self.store.agents.set_state(actor, name, AgentState.removed, f"spawn failed: {exc}")
        return blocked

    def sling(
        self, actor: str, bead_id: str, target: str, lease_seconds: float = 600.0, max_attempts: int | None = None
    ) -> Agent:
        """Put a bead on an agent's hook: a running agent's name, or a rig (spawns a polecat for it)."""
        agent = self.store.agents.find(target)
        if (agent is None or agent.state is AgentState.removed) and is_rig(self.config.town_dir, target):
            return self.spawn(
                actor, Role.polecat, rig=target, bead=bead_id, lease_seconds=lease_seconds, max_attempts=max_attempts
            )
        return hook_onto(self.store, actor, bead_id, target, lease_seconds)

    def stop(self, actor: str, name: str, reason: str) -> Agent:
        """Stop and remove the agent's container, give its beads back (a stop is not a failed attempt) and
        revoke its credentials; its repository and branch are kept."""
        agent = self.store.agents.get(name)
        status: ContainerStatus | None = None
        with contextlib.suppress(NotFound):
            status = self.runtime.stop(self.config.town, name)
        with contextlib.suppress(GastownError):
            self.runtime.remove(self.config.town, name)
        return cancel_agent(self.store, actor, agent, reason, status.exit_code if status else None)

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


def pick_name(store: Store, role: Role) -> str:
    return store.agents.free_name(list(NAME_POOL), role.value)


def is_rig(town_dir: Path, name: str) -> bool:
    return name in {r.name for r in rigs.list_rigs(town_dir)}


def check_slingable(store: Store, bead_id: str) -> Bead:
    bead = store.beads.get(bead_id)
    if bead.status is not BeadStatus.open or bead.blocked_by:
        why = f"waits on {', '.join(bead.blocked_by)}" if bead.blocked_by else f"is {bead.status.value}"
        raise Conflict(f"bead {bead_id} {why}; only open, unblocked beads can go on a hook")
    return bead


def request_agent(
    store: Store,
    town_dir: Path,
    limits_by_role: Mapping[str, Limits],
    actor: str,
    role: Role,
    *,
    rig: str | None = None,
    bead: str | None = None,
    command: Sequence[str] = (),
    limits: Limits | None = None,
    lease_seconds: float = 600.0,
    name: str | None = None,
    task: str | None = None,
    wait: bool = False,
) -> Agent:
    """Record that an agent should run, with `bead` claimed for it: intent only, in one transaction; the
    reconciler in `gastown up` starts it (no runtime is needed here). `task` is its first prompt when it has no
    bead (the launcher's default otherwise). `wait`: nothing is there to do yet, so its launcher ends at once
    without a model call; the first nudge resumes it (its Claude Code session starts then, under the same id)."""
    if rig:
        rigs.get_rig(town_dir, rig)
    if bead is not None:
        check_slingable(store, bead)
    limits = limits or limits_by_role.get(role.value) or Limits()
    meta: dict[str, object] = {
        "session_id": str(uuid.uuid4()),
        "command": list(command),
        "limits": dataclasses.asdict(limits),
        **({"task": task} if task else {}),
        **({"wait": True} if wait else {}),
    }
    return store.launches.request(actor, name or pick_name(store, role), role, rig, meta, bead, lease_seconds)


def hook_onto(store: Store, actor: str, bead_id: str, target: str, lease_seconds: float) -> Agent:
    """Sling a bead to an agent that is already working: claim it for the agent and nudge it."""
    agent = store.agents.find(target)
    if agent is None or agent.state is AgentState.removed:
        raise NotFound(f"no agent or rig named {target!r}; see `gastown agent ls` and `gastown rig list`")
    if not agent.state.takes_work:
        raise InvalidInput(f"{target} is {agent.state.value}; sling to a running agent or to a rig")
    check_slingable(store, bead_id)
    store.beads.claim(target, bead_id, lease_seconds)
    store.messages.send(actor, target, MessageKind.nudge, f"Bead {bead_id} is on your hook: claim it and work it.")
    return store.agents.set_state(actor, target, agent.state, "slung", hook=bead_id)


def cancel_agent(store: Store, actor: str, agent: Agent, reason: str, exit_code: int | None = None) -> Agent:
    """An agent is done with (stopped by an operator, or its request withdrawn): its beads go back without
    counting a failed attempt, its credentials stop working, and it is marked exited."""
    for held in store.beads.held_by(agent.name):
        store.beads.release(actor, held.id, f"{agent.name} stopped: {reason}", None, count_attempt=False)
    store.agents.revoke(actor, agent.name)
    meta: dict[str, object] = {"exit_reason": "stopped", "desired": "stopped"}
    if exit_code is not None:
        meta["exit_code"] = exit_code
    return store.agents.set_state(actor, agent.name, AgentState.exited, reason or "stopped", **meta)


def role_limits(settings: Settings) -> dict[str, Limits]:
    """`[runtime.limits.<role>]` from town.toml as container `Limits`."""
    out = {}
    for role, fields in settings.runtime.limits.items():
        try:
            values: dict[str, Any] = {k: (float(v) if k == "cpus" else int(v)) for k, v in fields.items()}
            out[role] = Limits(**values)
        except TypeError as exc:
            raise InvalidInput(f"bad [runtime.limits.{role}] in town.toml: {exc}") from exc
    return out


class FleetAPI(AgentsAPI, MailAPI):
    """Spawning, stopping, slinging and supervising agents in containers (mayor, overseer, witness)."""

    _fleet: Fleet | None = None  # None: this town has no container runtime (a CLI command, a test)
    _listeners: tuple[Callable[[], None], ...] = ()  # woken when intent is recorded (see on_intent)

    def _the_fleet(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeUnavailable(
                "this town has no container runtime attached: start it with `gastown up` to spawn agents"
            )
        return self._fleet

    def spawn(
        self,
        actor: Agent,
        role: str,
        *,
        rig: str | None = None,
        bead: str | None = None,
        command: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> Agent:
        """Request an agent (with `bead` on its hook). Any surface can: the reconciler in `gastown up` starts it,
        at once when this process holds the runtime."""
        self._require(actor, "town.spawn", "spawn agents")
        return self._request(actor, guard.choice(Role, role, "role"), rig, bead, command, limits)

    def request_polecat(self, actor: Agent, bead_id: str, rig: str) -> Agent:
        """Record a polecat for `bead_id` on `rig` and leave the launch to the reconciler (which starts what
        it dispatched in one tick side by side)."""
        self._require(actor, "town.sling", "sling beads")
        return self._request(actor, Role.polecat, rig, bead_id, launch=False)

    def _request(
        self,
        actor: Agent,
        role: Role,
        rig: str | None,
        bead: str | None,
        command: Sequence[str] = (),
        limits: Limits | None = None,
        *,
        launch: bool = True,
    ) -> Agent:
        with self._mail_if_blocked(actor, bead):
            agent = request_agent(
                self._store,
                self.settings.town_dir,
                role_limits(self.settings),
                actor.name,
                role,
                rig=rig,
                bead=bead,
                command=command,
                limits=limits,
                lease_seconds=self.settings.lease.seconds,
            )
            self._intent_recorded()
            if self._fleet is None or not launch:
                return agent  # intent recorded; the town's reconciler carries it out
            launched = self._fleet.launch(
                actor.name, agent.name, self.settings.lease.seconds, self.settings.witness.max_attempts
            )
            return launched or self._fleet.started_elsewhere(agent.name)

    def spawn_limits(self, role: str, **overrides: Any) -> Limits:
        """The container limits a spawn of `role` gets: the role's configured ones with `overrides` applied."""
        base = role_limits(self.settings).get(role)
        return dataclasses.replace(base or Limits(), **overrides)

    def stop(self, actor: Agent, name: str, reason: str = "") -> Agent:
        """Stop an agent: at once with the runtime here, else as intent the reconciler carries out. An agent
        that never started (or runs no container) is stopped right away, wherever this is called."""
        self._require(actor, "town.stop", "stop agents")
        agent = self.agent(name)
        why = guard.text("reason", reason, 2000)
        if self._fleet is not None:
            return self._fleet.stop(actor.name, name, why)
        if agent.state is AgentState.requested or not agent.metadata.get("container"):
            return cancel_agent(self._store, actor.name, agent, why)
        stopping = self._store.launches.want_stopped(actor.name, name, why)
        self._intent_recorded()
        return stopping

    def sling(self, actor: Agent, bead_id: str, target: str) -> Agent:
        """Put a bead on an agent's hook: a working agent's name, or a rig (requests a polecat for it)."""
        self._require(actor, "town.sling", "sling beads")
        found = self._store.agents.find(target)
        if (found is None or found.state is AgentState.removed) and is_rig(self.settings.town_dir, target):
            return self._request(actor, Role.polecat, target, bead_id)
        return hook_onto(self._store, actor.name, bead_id, target, self.settings.lease.seconds)

    def ready_for_rig(self, actor: Agent, rig: str, limit: int) -> list[BeadSummary]:
        """Ready beads that belong on `rig`: labelled `rig:<name>`, or with no rig label when it is the only rig."""
        self._require(actor, "bead.read", "list ready beads")
        found = self._store.beads.ready(limit=limit, label=f"{RIG_LABEL}{rig}")
        if len(found) < limit and [r.name for r in rigs.list_rigs(self.settings.town_dir)] == [rig]:
            found += self._store.beads.ready(limit=limit - len(found), unlabelled=RIG_LABEL)
        return found

    def polecats_by_rig(self, actor: Agent) -> dict[str, int]:
        """Polecats alive or being started, per rig (what the scheduler's limits count)."""
        self._require(actor, "town.agents", "count agents")
        counts: dict[str, int] = {}
        for agent in self._store.agents.live(role=Role.polecat, starting=True):
            if agent.rig and (agent.state.alive or agent.launching):
                counts[agent.rig] = counts.get(agent.rig, 0) + 1
        return counts

    def on_intent(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from any thread) whenever intent is recorded here: the reconciler wakes at once."""
        self._listeners = (*self._listeners, listener)

    def _intent_recorded(self) -> None:
        for listener in self._listeners:
            listener()

    def reconcile(self, actor: Agent) -> list[Carried]:
        """Carry out recorded intent: stop what should stop, start what was requested. A launch that fails is
        reported, counted against its bead (blocked after max_attempts), and not retried here."""
        self._require(actor, "town.spawn", "start and stop agents")
        fleet = self._the_fleet()
        done: list[Carried] = []
        for agent in self._store.launches.to_stop():
            reason = str(agent.metadata.get("stop_reason") or "stopped")
            if agent.state is AgentState.requested:
                cancel_agent(self._store, actor.name, agent, reason)
            else:
                fleet.stop(actor.name, agent.name, reason)
            done.append(Carried("stopped", agent.name, agent.rig, reason))

        def start(agent: Agent) -> Carried | None:
            bead = str(agent.metadata["hook"]) if agent.metadata.get("hook") else None
            try:
                with self._mail_if_blocked(actor, bead):
                    launched = fleet.launch(
                        actor.name, agent.name, self.settings.lease.seconds, self.settings.witness.max_attempts
                    )
            except GastownError as exc:
                return Carried("failed", agent.name, agent.rig, str(exc))
            if launched is None:
                return None  # another reconciler began it first
            return Carried("launched", agent.name, agent.rig, f"generation {launched.metadata.get('generation')}")

        pending = self._store.launches.pending()
        # Side by side: each launch mostly waits on the engine (create, start), so a burst starts together.
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(pending)))) as pool:
            done += [c for c in pool.map(start, pending) if c is not None]
        return done

    def logs(self, actor: Agent, name: str, tail: int = 200) -> str:
        self._require(actor, "town.agents", "read agent logs")
        return self._the_fleet().logs(name, tail)

    # -- supervision (witness, town shutdown) ------------------------------------------------------
    @property
    def has_fleet(self) -> bool:
        """This town can start containers (it runs inside `gastown up` or attached to it)."""
        return self._fleet is not None

    def reap_expired(self, actor: Agent) -> list[str]:
        """The host-side wall-clock backstop: stop containers past their deadline whose own timer failed. Time the
        town spent frozen (emergency stops) within the longest wall-clock limit does not count."""
        self._require(actor, "town.stop", "stop agents")
        if self._fleet is None:
            return []
        now = time.time()
        longest = max([Limits().wallclock_s, *(lim.wallclock_s for lim in self._fleet.config.limits.values())])
        frozen = self._store.health.frozen_within(longest, now)
        try:
            return [s.agent for s in self._fleet.runtime.reap_expired(self._fleet.config.town, now - frozen)]
        except RuntimeUnavailable:
            return []

    def containers(self, actor: Agent) -> dict[str, ContainerStatus] | None:
        """Every container of this town by agent name; None when there is no runtime or it is down."""
        self._require(actor, "town.agents", "list containers")
        if self._fleet is None:
            return None
        try:
            return {s.agent: s for s in self._fleet.runtime.list(self._fleet.config.town)}
        except RuntimeUnavailable:
            return None

    def halt(self, actor: Agent, name: str, reason: str, exit_reason: str) -> Agent:
        """Stop an agent's container and mark it exited, leaving its beads where they are (the caller decides)."""
        self._require(actor, "town.stop", "stop agents")
        agent = self._store.agents.get(name)
        if self._fleet is not None and agent.metadata.get("container") is not None:
            with contextlib.suppress(GastownError):
                self._fleet.runtime.stop(self._fleet.config.town, name)
        self._store.agents.revoke(actor.name, name)
        return self._store.agents.set_state(actor.name, name, AgentState.exited, reason, exit_reason=exit_reason)

    def resume_with_nudges(self, actor: Agent, name: str) -> tuple[Agent, list[Message]] | None:
        """Resume an ended session with its pending nudges as the prompt; None when it has none (or no runtime).

        The nudges are marked delivered in the same step, so two supervisors never resume the same agent.
        A failed resume raises, with the nudges delivered: the caller reports them to the mayor.
        """
        self._require(actor, "town.stop", "resume agents")
        if self._fleet is None or not self._store.messages.has_pending_nudge(name):
            return None
        nudges = self._store.messages.deliver_nudges(name)
        if not nudges:
            return None  # someone else took them first
        prompt = "\n".join(n.nudge_line() for n in nudges)
        try:
            return self._fleet.resume(actor.name, name, prompt), nudges
        except GastownError as exc:
            raise type(exc)(f"{exc} (the nudge was: {prompt[:1000]})") from exc

    def stop_all(self, actor: Agent, reason: str) -> list[str]:
        """Stop every running agent container of this town; their beads go back to the queue."""
        self._require(actor, "town.stop", "stop agents")
        if self._fleet is None:
            return []
        fleet = self._fleet
        names = [a.name for a in self._store.agents.live() if a.metadata.get("container")]

        def stop(name: str) -> str | None:
            try:
                fleet.stop(actor.name, name, reason)
            except GastownError:
                return None
            return name

        # In parallel: each container gets its grace period to exit cleanly, and they all get it at once.
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(names)))) as pool:
            return [name for name in pool.map(stop, names) if name is not None]

    def remove_orphans(self, actor: Agent) -> list[str]:
        """Remove containers of this town whose agent row is gone or removed (after a crash of the town)."""
        self._require(actor, "town.stop", "remove containers")
        return self._fleet.cleanup_orphans() if self._fleet is not None else []

    def teardown(self, actor: Agent) -> None:
        """Remove every container and the network of this town, and unmount the agents' disk (the town process
        does it as it shuts down; the next start mounts it again)."""
        self._require(actor, "town.admin", "tear the town down")
        if self._fleet is None:
            return
        # Each step on its own: a container the engine is still removing must not leave the network behind.
        with contextlib.suppress(GastownError):
            self._fleet.runtime.cleanup(self._fleet.config.town)
        with contextlib.suppress(GastownError):
            self._fleet.runtime.remove_network(self._fleet.config.town)
        with contextlib.suppress(GastownError):
            disks.unmount_agents_disk(self.settings.town_dir)

    def open_agents_disk(self, actor: Agent) -> str:
        """Put the agents' directories on their capped disk (`[runtime] agents_disk_mb`); says what it did, or
        loudly that agents run uncapped and why."""
        self._require(actor, "town.admin", "set up the agents' disk")
        size = self.settings.runtime.agents_disk_mb
        if size == 0:
            return "agents' disk use is NOT capped: [runtime] agents_disk_mb = 0"
        try:
            return "agents' disk: " + disks.mount_agents_disk(self.settings.town_dir, size)
        except disks.DiskUnavailable as exc:
            return f"WARNING: agents' disk use is NOT capped ({exc}); set [runtime] agents_disk_mb = 0 to say so"

    def agents_disk_usage(self, actor: Agent) -> dict[str, tuple[float, float | None]]:
        """Each agent's space on the capped disk: (used MB, cap MB); empty when uncapped."""
        self._require(actor, "town.status", "read disk use")
        try:
            return disks.usage_mb(self.settings.town_dir)
        except disks.DiskUnavailable:
            return {}

    @contextlib.contextmanager
    def _mail_if_blocked(self, actor: Agent, bead_id: str | None) -> Iterator[None]:
        """A spawn whose failure blocked its bead (too many failed attempts) is news for the mayor."""
        before = None
        if bead_id:
            with contextlib.suppress(GastownError):  # a bad id is the spawn's own error to report
                before = self._store.beads.get(bead_id).status
        try:
            yield
        except GastownError as exc:
            if bead_id and before is not None and before is not BeadStatus.blocked:
                bead = self._store.beads.get(bead_id)
                if bead.status is BeadStatus.blocked:
                    cause = exc.__cause__ if isinstance(exc.__cause__, GastownError) else exc
                    self.escalate(
                        actor,
                        f"{bead_id} blocked: its polecat could not be started",
                        f"{bead_id} ({bead.title}) was blocked after {bead.attempts} failed attempts. The last "
                        f"failure: {cause}. Fix the cause, then unblock the bead (`bead_update status=open`).",
                    )
            raise
