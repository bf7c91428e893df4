"""What the dogs and the operator need from the town: the emergency stop and the dispatch hold, database health
(integrity, journal, backups, restore), upstream rate-limit counts, orphan containers, and mail sent once."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from gastown_mcp import disks, rigs
from gastown_mcp.errors import GastownError, NotFound, RuntimeUnavailable
from gastown_mcp.models import OPEN_MERGE_STATES, Agent, AgentState, Role, Verb, now_iso
from gastown_mcp.store import backup as bk
from gastown_mcp.store import health
from gastown_mcp.town.fleet import FleetAPI

OPEN = tuple(s.value for s in OPEN_MERGE_STATES)


class DogsAPI(FleetAPI):
    # -- emergency stop --------------------------------------------------------------------------------
    def frozen(self) -> dict[str, Any] | None:
        """The emergency stop in force (who, why, when), or None. One indexed read: the gateway asks per call."""
        return self._store.health.get(health.ESTOP)

    def estop(self, actor: Agent, reason: str) -> dict[str, Any]:
        """Freeze the town: record who and why; the gateway refuses model calls and the scheduler stops at once,
        and every agent container is paused here (with a runtime) and by the dogs of `gastown up`."""
        self._require(actor, "town.admin", "stop the whole town")
        stop = {"by": actor.name, "reason": reason or "no reason given", "at": now_iso()}
        if not self._store.health.set(actor.name, health.ESTOP, stop, Verb.town_estopped):
            return self.frozen() or stop
        self.freeze_containers(actor)
        return stop

    def thaw(self, actor: Agent, reason: str = "") -> dict[str, Any] | None:
        """Lift the emergency stop; containers resume and dispatch goes on. Returns the stop that was lifted."""
        self._require(actor, "town.admin", "thaw the town")
        lifted = self._store.health.clear(actor.name, health.ESTOP, Verb.town_thawed, reason)
        if lifted is not None:
            # Lease and idle timers did not run while frozen: every holder starts a fresh lease and idle clock.
            self._store.health.restart_timers(self.settings.lease.seconds)
            # Nor did the wall clock: the host's backstop leaves this time out (the containers' own timers too).
            self._store.health.add_frozen(health.epoch(str(lifted.get("at") or now_iso())), time.time())
        self.thaw_containers(actor)
        return lifted

    def freeze_containers(self, actor: Agent) -> list[str]:
        """Pause every running container of this town; the agents that were paused now."""
        self._require(actor, "town.admin", "freeze agents")
        if self._fleet is None:
            return []
        fleet = self._fleet
        done = []
        with contextlib.suppress(RuntimeUnavailable):
            for status in fleet.runtime.list(fleet.config.town):
                if status.state == "running":
                    with contextlib.suppress(GastownError):
                        if fleet.runtime.pause(fleet.config.town, status.agent):
                            done.append(status.agent)
        return done

    def thaw_containers(self, actor: Agent) -> list[str]:
        self._require(actor, "town.admin", "thaw agents")
        if self._fleet is None:
            return []
        fleet = self._fleet
        done = []
        with contextlib.suppress(RuntimeUnavailable):
            for agent in fleet.runtime.paused(fleet.config.town):
                with contextlib.suppress(GastownError):
                    if fleet.runtime.unpause(fleet.config.town, agent):
                        done.append(agent)
        return done

    def paused_containers(self, actor: Agent) -> list[str] | None:
        self._require(actor, "town.agents", "list containers")
        if self._fleet is None:
            return None
        try:
            return self._fleet.runtime.paused(self._fleet.config.town)
        except RuntimeUnavailable:
            return None

    # -- dispatch hold (disk, rate-limit storms) -------------------------------------------------------
    def dispatch_hold(self) -> str | None:
        """Why the scheduler must not dispatch now (emergency stop, or a hold that has not expired), or None."""
        stop = self.frozen()
        if stop is not None:
            return f"emergency stop by {stop.get('by')}: {stop.get('reason')}"
        hold = self._store.health.get(health.HOLD)
        if hold is not None and float(hold.get("until", 0)) > time.time():
            return str(hold.get("reason", "dispatch held"))
        return None

    def hold_dispatch(self, actor: Agent, reason: str, seconds: float) -> bool:
        self._require(actor, "town.admin", "hold dispatch")
        hold = {"by": actor.name, "reason": reason, "until": round(time.time() + seconds, 3), "at": now_iso()}
        current = self._store.health.get(health.HOLD)
        if current is not None and current.get("reason") == reason and float(current.get("until", 0)) > time.time():
            return False
        return self._store.health.set(actor.name, health.HOLD, hold, Verb.dispatch_held)

    def release_dispatch(self, actor: Agent, reason: str = "") -> bool:
        self._require(actor, "town.admin", "release dispatch")
        return self._store.health.clear(actor.name, health.HOLD, Verb.dispatch_resumed, reason) is not None

    def upstream_429s(self, window_seconds: float) -> int:
        return self._store.health.upstream_status_count(429, now_iso(time.time() - window_seconds))

    def town_budget_spent(self) -> bool:
        return self._store.health.town_budget_spent()

    # -- database health -------------------------------------------------------------------------------
    def db_integrity(self, actor: Agent, *, full: bool = False) -> list[str]:
        """SQLite's quick (or full) integrity check of the live database: [] when sound."""
        self._require(actor, "town.status", "check the database")
        return self._store.db.quick_check(full=full)

    def journal_state(self, actor: Agent) -> dict[str, Any]:
        self._require(actor, "town.status", "check the journal")
        state = self._store.db.journal_state()
        newest = self.backups(actor)
        state["backup_seq"] = newest[0].seq if newest else None
        return state

    def journal_bytes(self, actor: Agent) -> int:
        """The journal file's size: a stat, cheap enough for every dogs tick (`journal_state` reads its ends)."""
        self._require(actor, "town.status", "check the journal")
        return self._store.db.journal_bytes()

    def checkpoint_wal(self, actor: Agent, *, restart: bool = True) -> dict[str, Any]:
        """A WAL checkpoint (`Database.checkpoint`: PASSIVE, then RESTART when writers starved it and `restart`):
        the frames the WAL held, whether it was let start over, and its file's size."""
        self._require(actor, "town.admin", "checkpoint the database")
        done = self._store.db.checkpoint(restart=restart)
        return {"frames": done.frames, "restarted": done.restarted, "bytes": self._store.db.wal_bytes()}

    def compact(self, actor: Agent, at: float | None = None) -> dict[str, int]:
        """Move history past its retention out of the hot tables: exited agents to the archive table, usage
        rows into daily totals, events into compressed files under archive/. How many rows each moved."""
        self._require(actor, "town.admin", "compact the town's history")
        now = time.time() if at is None else at
        dogs, day = self.settings.dogs, 86400.0
        growth = self._store.growth
        return {
            "agents_archived": growth.archive_agents(now_iso(now - dogs.agent_archive_seconds)),
            "usage_rolled": growth.roll_usage(now_iso(now - dogs.usage_retention_days * day)),
            "events_archived": growth.rotate_events(
                now_iso(now - dogs.events_retention_days * day), self.settings.town_dir / "archive"
            ),
        }

    def backup_now(self, actor: Agent) -> bk.BackupInfo:
        """Compact the history, then take a verified backup; the journal drops what every kept backup holds."""
        self._require(actor, "town.admin", "back up the town")
        self.compact(actor)
        dogs = self.settings.dogs
        info = bk.backup(
            self._store.db, self.settings.backups_dir, keep=dogs.backup_keep,
            journal_max_bytes=int(dogs.journal_max_mb * (1 << 20)),
        )  # fmt: skip
        # A verified backup at the current sequence covers whatever the journal lost before it.
        if self._store.db.journal is not None:
            self._store.db.journal.replaced = False
        self._store.db.journal_error = None
        return info

    def backups(self, actor: Agent) -> list[bk.BackupInfo]:
        self._require(actor, "town.status", "list backups")
        return bk.list_backups(self.settings.backups_dir)

    def db_paths(self) -> tuple[Path, Path]:
        return self.settings.db_path, self.settings.journal_path

    # -- orphans and mail ------------------------------------------------------------------------------
    def orphan_containers(self, actor: Agent, retention_seconds: float) -> dict[str, list[str]] | None:
        """Containers with no live agent row, and exited ones past the retention; None without a runtime."""
        self._require(actor, "town.agents", "list containers")
        if self._fleet is None:
            return None
        try:
            listed = self._fleet.runtime.list(self._fleet.config.town)
        except RuntimeUnavailable:
            return None
        alive = {a.name for a in self._store.agents.live()}
        known = {s.agent for s in listed if self._store.agents.taken(s.agent)}
        now = time.time()
        return {
            "unknown": [s.agent for s in listed if s.agent not in known],
            "stale": [
                s.agent
                for s in listed
                if s.agent in known
                and s.agent not in alive
                and s.state == "exited"
                and s.finished_at is not None
                and now - s.finished_at > retention_seconds
            ],
        }

    def orphan_files(self, actor: Agent) -> dict[str, list[str]]:
        """What dead agents left on disk and in the rigs: repositories of agents that are removed or unknown,
        or exited with no container left (pruned after the retention); handed-in branches (`rig:ref`) whose
        bead is merged or gone and has no open merge request, unless their agent is alive; and host firewall
        chains of bridges that no longer exist (with a runtime that has them)."""
        self._require(actor, "town.agents", "list orphans")
        agents = {a.name: a for a in self._store.agents.all()}
        containers: set[str] | None = None
        if self._fleet is not None:
            with contextlib.suppress(RuntimeUnavailable):
                containers = {s.agent for s in self._fleet.runtime.list(self._fleet.config.town)}
        found: dict[str, list[str]] = {"worktrees": [], "branches": [], "firewalls": []}
        for rig in rigs.list_rigs(self.settings.town_dir):
            for name in rigs.agent_repos(rig):
                agent = agents.get(name)
                gone = agent is None or (
                    agent.state is AgentState.exited and containers is not None and name not in containers
                )
                if gone:
                    found["worktrees"].append(f"{rig.name}:{name}")
            for ref, name, bead_id in rigs.handin_refs(rig):
                agent = agents.get(name)
                if agent is not None and agent.state.alive:
                    continue
                try:
                    bead = self._store.beads.get(bead_id)
                except NotFound:
                    found["branches"].append(f"{rig.name}:{ref}")
                    continue
                open_requests = self._store.merges.search(states=OPEN, bead_id=bead_id, limit=1)
                if bead.metadata.get("merged") and not open_requests:
                    found["branches"].append(f"{rig.name}:{ref}")
        stale = getattr(self._fleet.runtime, "stale_firewalls", None) if self._fleet is not None else None
        if stale is not None:
            with contextlib.suppress(RuntimeUnavailable):
                found["firewalls"] = stale()
        return found

    def prune_files(self, actor: Agent, found: dict[str, list[str]]) -> list[str]:
        """Remove what `orphan_files` found, each checked again first; returns what was removed."""
        self._require(actor, "town.stop", "remove orphans")
        again = self.orphan_files(actor)
        removed = []
        for item in set(found.get("worktrees", [])) & set(again["worktrees"]):
            rig, name = item.split(":", 1)
            rigs.remove_agent_repo(rigs.get_rig(self.settings.town_dir, rig), name)
            removed.append(f"worktree {item}")
            left = disks.agents_root(self.settings.town_dir) / name
            if not any((left / "rigs").glob("*")):  # nothing else of it: its ~/.claude and capped space go too
                disks.remove_agent_dir(self.settings.town_dir, name)
        for item in set(found.get("branches", [])) & set(again["branches"]):
            rig, ref = item.split(":", 1)
            rigs.delete_handin_ref(rigs.get_rig(self.settings.town_dir, rig), ref)
            removed.append(f"branch {item}")
        bridges = set(found.get("firewalls", [])) & set(again["firewalls"])
        remove = getattr(self._fleet.runtime, "remove_firewalls", None) if self._fleet is not None else None
        if bridges and remove is not None:
            removed += [f"firewall {b}" for b in remove(sorted(bridges))]
        if removed:
            self._store.events.record(actor.name, Verb.orphans_pruned, {"removed": sorted(removed)})
        return sorted(removed)

    def prune_containers(self, actor: Agent, agents: list[str]) -> list[str]:
        self._require(actor, "town.stop", "remove containers")
        if self._fleet is None or not agents:
            return []
        with contextlib.suppress(RuntimeUnavailable):
            return self._fleet.runtime.cleanup(self._fleet.config.town, agents)
        return []

    def mail_mayor_once(self, actor: Agent, key: str, subject: str, body: str) -> bool:
        """Tell the mayor about a finding that needs a human, once until the finding clears (`forget_finding`)."""
        self._require(actor, "town.mail", "send mail")
        mayors = [a.name for a in self._store.agents.all() if a.role is Role.mayor]
        return self._store.health.mail_once(actor.name, mayors[0] if mayors else "mayor", key, subject, body)

    def forget_finding(self, key: str) -> None:
        self._store.health.forget(key)
