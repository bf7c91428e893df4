"""The dogs: deterministic health checks, each a small class with `tick()` returning its findings.

`gastown up` steps the kennel on an interval (each dog keeps its own interval); `gastown doctor` runs every
dog once, with the full integrity check, and applies only the safe repairs with `--fix`. A red finding that
needs a human is mailed to the mayor once, until it clears.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gastown_mcp.errors import GastownError
from gastown_mcp.models import Agent, Role
from gastown_mcp.town import Town, system_agent

DOCKER_ROOT = Path("/var/lib/docker")
MIB = 1 << 20


@dataclass
class Finding:
    check: str
    state: str  # green, yellow, red
    detail: str
    todo: str = ""
    fixed: str = ""

    @property
    def verb(self) -> str:  # the daemon's log line: "<dog>: <verb> <target> (<reason>)"
        return self.state

    @property
    def target(self) -> str:
        return self.check

    @property
    def reason(self) -> str:
        return "; ".join(x for x in (self.detail, self.fixed or self.todo) if x)


@dataclass
class Dog:
    town: Town
    fix: bool = True
    doctor: bool = False
    interval: float = 0.0
    clock: Callable[[], float] = time.time
    _last: float = field(default=-1e18, init=False)
    name = "dog"

    @property
    def me(self) -> Agent:
        return system_agent("dogs", Role.overseer)

    def due(self) -> bool:
        return self.doctor or self.clock() - self._last >= self.interval

    def tick(self) -> list[Finding]:
        if not self.due():
            return []
        self._last = self.clock()
        try:
            return self.check()
        except GastownError as exc:
            return [Finding(self.name, "red", str(exc), "run `gastown doctor`")]

    def check(self) -> list[Finding]:  # pragma: no cover - each dog has its own
        raise NotImplementedError


class IntegrityDog(Dog):
    name = "integrity"

    def check(self) -> list[Finding]:
        problems = self.town.db_integrity(self.me, full=self.doctor)
        kind = "full" if self.doctor else "quick"
        if not problems:
            return [Finding(self.name, "green", f"{kind} check ok")]
        hint = f"stop the town and run `gastown restore --town {self.town.settings.town_dir}`"
        return [Finding(self.name, "red", f"{kind} check: {problems[0]}", hint)]


class JournalDog(Dog):
    name = "journal"

    def check(self) -> list[Finding]:
        s = self.town.journal_state(self.me)
        problems = []
        if not s["present"] and s["db_seq"] > 0:
            problems.append("the journal file is missing")
        if s["replaced"]:
            problems.append("the journal file was deleted or replaced while the town ran")
        if s["error"]:
            problems.append(s["error"])
        if s["present"] and s["tail_seq"] < s["db_seq"]:  # ahead is a write in flight (lines precede COMMIT)
            problems.append(f"journal ends at {s['tail_seq']}, database at {s['db_seq']}")
        covered = (s["backup_seq"] or 0) + 1
        if s["db_seq"] > 0 and (not s["present"] or s["head_seq"] > covered):
            problems.append(
                f"writes {covered}..{(s['head_seq'] or s['db_seq'] + 1) - 1} are in no backup and not in the journal"
            )
        if not problems:
            return [Finding(self.name, "green", f"sequence {s['db_seq']}, journal {s['head_seq']}..{s['tail_seq']}")]
        finding = Finding(self.name, "red", "; ".join(problems), "take a backup now: `gastown backup`")
        if self.fix:
            info = self.town.backup_now(self.me)
            finding.state, finding.fixed = "yellow", f"took backup {Path(info.path).name} at sequence {info.seq}"
        return [finding]


class WalDog(Dog):
    """The WAL stays bounded whichever process writes: a checkpoint each tick, RESTART when writers kept the
    PASSIVE ones from catching up (the gateway's own thread does the same every 0.5 s while it runs); yellow when
    a reader held its snapshot (or a writer its lock) through it: the WAL cannot start over while one does."""

    name = "wal"

    def check(self) -> list[Finding]:
        s = self.town.checkpoint_wal(self.me, restart=self.fix)
        size = f"{s['frames']} frames, file {s['bytes'] / MIB:.1f} MiB"
        if s["restarted"] is False:
            return [
                Finding(
                    self.name,
                    "yellow",
                    f"WAL not started over: {size}; a reader held its snapshot (or a writer its lock) through "
                    "the checkpoint",
                    "a process holding one read or write open for long keeps the WAL growing: find it with "
                    f"`fuser {self.town.settings.db_path}-wal` and restart it; the next tick tries again",
                )
            ]
        if s["restarted"]:
            return [Finding(self.name, "green", f"WAL {size}", fixed="checkpointed it so the WAL starts over")]
        return [Finding(self.name, "green", f"WAL {size}")]


class BackupDog(Dog):
    """A verified backup every `backup_interval_seconds` when anything was written since the last one, and at
    once (checked every tick) when a flood of writes took the journal past `journal_max_mb`: the journal then
    drops what the new backup holds (`backup.rotate_journal`), so it stays bounded between backups too."""

    name = "backup"

    def due(self) -> bool:
        return super().due() or (self.fix and self._over() is not None)

    def _over(self) -> str | None:
        """Why the journal is too big, or None."""
        size, cap = self.town.journal_bytes(self.me), self.town.settings.dogs.journal_max_mb
        if size <= cap * MIB:
            return None
        return f"journal {size / MIB:.1f} MiB, past [dogs] journal_max_mb ({cap:g})"

    def check(self) -> list[Finding]:
        backups = self.town.backups(self.me)
        seq = self.town.journal_state(self.me)["db_seq"]
        over = self._over()
        if over is None and backups and (self.doctor or backups[0].seq == seq):
            return [Finding(self.name, "green", f"{len(backups)} verified, newest at sequence {backups[0].seq}")]
        if self.doctor and not self.fix:
            if over is not None:
                return [Finding(self.name, "yellow", over, "`gastown backup`: the journal drops what it holds")]
            return [Finding(self.name, "yellow", "no verified backup yet", "`gastown backup`")]
        info = self.town.backup_now(self.me)
        fixed = "backed up"
        if over is not None:
            fixed += f" ({over}); the journal now {self.town.journal_bytes(self.me) / MIB:.1f} MiB"
        return [Finding(self.name, "green", f"backup at sequence {info.seq} in {info.seconds}s", fixed=fixed)]


class DiskDog(Dog):
    name = "disk"

    def check(self) -> list[Finding]:
        cfg = self.town.settings.dogs
        out = []
        for where in (self.town.settings.town_dir, DOCKER_ROOT):
            if not where.exists():
                continue
            free_mb = shutil.disk_usage(where).free // MIB
            detail = f"{free_mb} MiB free under {where}"
            if free_mb < cfg.disk_estop_mb:
                self.town.estop(self.me, f"disk: {detail}")
                out.append(Finding(self.name, "red", detail, "free space, then `gastown thaw`", "emergency stop"))
            elif free_mb < cfg.disk_pause_mb:
                self.town.hold_dispatch(self.me, f"disk: {detail}", cfg.interval_seconds * 4)
                out.append(Finding(self.name, "red", detail, "free space", "dispatch held"))
            elif free_mb < cfg.disk_warn_mb:
                out.append(Finding(self.name, "yellow", detail, "free space soon"))
            else:
                out.append(Finding(self.name, "green", detail))
        return out


class OrphanDog(Dog):
    name = "orphans"

    def check(self) -> list[Finding]:
        found = self.town.orphan_containers(self.me, self.town.settings.dogs.exited_retention_seconds)
        if found is None:
            return [Finding(self.name, "green", "no container runtime in this process: nothing to check")]
        names = found["unknown"] + found["stale"]
        if not names:
            return [Finding(self.name, "green", "no orphan containers")]
        finding = Finding(self.name, "yellow", f"orphan containers: {', '.join(names)}", "`gastown doctor --fix`")
        if self.fix:
            try:
                removed = self.town.prune_containers(self.me, names)
            except GastownError as exc:  # e.g. Docker is removing it already: try again next tick
                finding.todo = f"could not remove them yet ({exc})"
                return [finding]
            finding.fixed = f"removed {len(removed)}"
        return [finding]


class LeftoversDog(Dog):
    """What dead agents left outside containers: repositories, handed-in branches, host firewall chains."""

    name = "leftovers"

    def check(self) -> list[Finding]:
        found = self.town.orphan_files(self.me)
        kinds = {"worktrees": "worktree", "branches": "branch", "firewalls": "firewall"}
        items = [f"{kinds.get(kind, kind)} {item}" for kind, listed in found.items() for item in listed]
        if not items:
            return [Finding(self.name, "green", "no orphan worktrees, handed-in branches or firewall chains")]
        finding = Finding(self.name, "yellow", f"left by dead agents: {', '.join(items)}", "`gastown doctor --fix`")
        if self.fix:
            try:
                removed = self.town.prune_files(self.me, found)
            except GastownError as exc:
                finding.todo = f"could not remove them yet ({exc})"
                return [finding]
            finding.fixed = f"removed {len(removed)}"
        return [finding]


class DockerDog(Dog):
    name = "docker"

    def check(self) -> list[Finding]:
        if not self.town.has_fleet:
            return [Finding(self.name, "green", "no container runtime in this process")]
        if self.town.containers(self.me) is None:
            return [Finding(self.name, "red", "the container engine does not answer", "start dockerd")]
        return [Finding(self.name, "green", "engine reachable")]


class GatewayDog(Dog):
    """Upstreams reachable (a TCP connection, never a model call), and the budget and rate-limit rules:
    the town estops itself when its whole budget is spent and holds dispatch on a storm of upstream 429s."""

    name = "gateway"

    def check(self) -> list[Finding]:
        cfg = self.town.settings.dogs
        out = []
        if self.town.town_budget_spent() and self.town.frozen() is None:
            self.town.estop(self.me, "the town's whole budget is spent")
            out.append(Finding(self.name, "red", "town budget spent", "raise it, then `gastown thaw`", "estop"))
        storms = self.town.upstream_429s(cfg.ratelimit_window_seconds)
        if storms >= cfg.ratelimit_storm:
            reason = f"{storms} upstream rate-limit errors in {cfg.ratelimit_window_seconds:.0f}s"
            self.town.hold_dispatch(self.me, reason, cfg.ratelimit_backoff_seconds)
            held = f"dispatch held {cfg.ratelimit_backoff_seconds:.0f}s"
            out.append(Finding(self.name, "yellow", reason, fixed=held))
        if cfg.probe_upstreams:
            for name, up in self.town.settings.gateway.upstreams.items():
                parts = urlsplit(up.base_url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                try:
                    socket.create_connection((parts.hostname or "", port), timeout=3).close()
                except OSError as exc:
                    out.append(Finding(self.name, "red", f"upstream {name} unreachable: {exc}", "check the network"))
        return out or [Finding(self.name, "green", "budget and upstreams fine")]


DOGS: tuple[type[Dog], ...] = (
    IntegrityDog,
    JournalDog,
    WalDog,
    BackupDog,
    DiskDog,
    OrphanDog,
    LeftoversDog,
    DockerDog,
    GatewayDog,
)


class Kennel:
    """Every dog, each on its own interval; `tick()` returns what is not green (and mails the mayor once)."""

    def __init__(self, town: Town, *, doctor: bool = False, fix: bool = True, clock: Callable[[], float] = time.time):
        cfg = town.settings.dogs
        intervals = {
            "integrity": cfg.integrity_interval_seconds,
            "backup": cfg.backup_interval_seconds,
        }
        self.town = town
        self.doctor = doctor
        self.dogs = [d(town, fix=fix, doctor=doctor, clock=clock, interval=intervals.get(d.name, 0.0)) for d in DOGS]
        if not doctor:
            self.dogs[0]._last = clock()  # the town's open ran the quick check a moment ago

    def run(self) -> list[Finding]:
        """Every due dog's findings, green included (what `gastown doctor` prints)."""
        found = [f for dog in self.dogs for f in dog.tick()]
        for f in found:
            key = f"{f.check}:{f.detail.split(':')[0]}"
            if f.state == "red" and not f.fixed:
                self.town.mail_mayor_once(
                    system_agent("dogs", Role.overseer),
                    key,
                    f"dogs: {f.check} is red",
                    f"{f.detail}\nwhat to do: {f.todo}",
                )
        return found

    def tick(self) -> list[Finding]:
        return [f for f in self.run() if f.state != "green" or f.fixed]


class Freezer:
    """The emergency stop, enforced by the town process every second: containers paused while frozen (also those
    started since), resumed when thawed."""

    def __init__(self, town: Town) -> None:
        self.town = town
        self.me = system_agent("dogs", Role.overseer)
        self._was_frozen = False

    def tick(self) -> list[Finding]:
        frozen = self.town.frozen() is not None
        out = []
        if frozen:
            paused = self.town.freeze_containers(self.me)
            if paused:
                out.append(Finding("estop", "red", f"paused {', '.join(paused)}"))
        elif self._was_frozen or self.town.paused_containers(self.me):
            resumed = self.town.thaw_containers(self.me)
            if resumed:
                out.append(Finding("estop", "green", f"resumed {', '.join(resumed)}", fixed="thawed"))
        self._was_frozen = frozen
        return out
