"""Beads in the town API: create, read, claim, update, comment, complete, release, link; requeue and block.

Each method checks the caller through the guard, renews its leases, and calls the store, which enforces
ownership ("only the holder may complete") atomically inside the same transaction as the change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gastown_mcp.errors import Forbidden, GastownError, InvalidInput, NotFound
from gastown_mcp.models import (
    Agent,
    Bead,
    BeadBrief,
    BeadResult,
    BeadStatus,
    BeadSummary,
    BeadType,
    Dep,
    DepKind,
    now_iso,
)
from gastown_mcp.town import guard
from gastown_mcp.town.merges import MergesAPI


class BeadsAPI(MergesAPI):
    def bead_create(
        self,
        actor: Agent,
        title: str,
        *,
        description: str = "",
        acceptance: str = "",
        type: str = "task",
        priority: int = 2,
        labels: Sequence[str] = (),
        parent: str | None = None,
        blocked_by: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Bead:
        deps: list[tuple[str, str]] = [(DepKind.blocks.value, b) for b in blocked_by]
        if guard.roles.can(actor.role, "bead.create"):
            self._touch(actor)
        elif guard.roles.can(actor.role, "bead.create.discovered"):
            if parent is not None or blocked_by:
                raise Forbidden(f"{actor.name} may create side-work beads but not set parent or blockers")
            self._touch(actor)
            held = self._store.beads.held_by(actor.name)
            if held:
                deps.append((DepKind.discovered_from.value, held[0].id))
            limits = self.settings.limits
            with self._queue_lock:  # the rate is counted and the bead created as one step
                since = now_iso(time.time() - 3600)
                guard.side_work(
                    actor,
                    title,
                    description,
                    acceptance,
                    guard.priority(priority),
                    floor=max((b.priority for b in held), default=limits.polecat_top_priority),
                    made_last_hour=self._store.beads.created_since(actor.name, since),
                    limits=limits,
                )
                return self._create(actor, title, description, acceptance, type, priority, labels, None, deps, metadata)
        else:
            raise Forbidden(f"{actor.name} ({actor.role.value}) may not create beads")
        return self._create(actor, title, description, acceptance, type, priority, labels, parent, deps, metadata)

    def _create(
        self,
        actor: Agent,
        title: str,
        description: str,
        acceptance: str,
        type: str,
        priority: int,
        labels: Sequence[str],
        parent: str | None,
        deps: list[tuple[str, str]],
        metadata: dict[str, Any] | None,
    ) -> Bead:
        bead = self._store.beads.create(
            actor.name,
            title=guard.title(title),
            description=guard.text("description", description),
            acceptance=guard.text("acceptance", acceptance),
            type=guard.choice(BeadType, type, "type").value,
            priority=guard.priority(priority),
            labels=guard.labels(labels),
            metadata=metadata,
            parent=parent,
            deps=deps,
        )
        self._intent_recorded()  # new ready work: the scheduler looks at once
        return bead

    def bead_show(self, actor: Agent, bead_id: str) -> Bead:
        self._require(actor, "bead.read", "read beads")
        return self._store.beads.get(bead_id)

    def bead_list(
        self,
        actor: Agent,
        *,
        status: Sequence[str] = (),
        assignee: str | None = None,
        label: str | None = None,
        type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[BeadSummary]:
        self._require(actor, "bead.read", "list beads")
        statuses = [guard.choice(BeadStatus, s, "status").value for s in status]
        return self._store.beads.search(
            status=statuses,
            assignee=assignee,
            label=label,
            type=guard.choice(BeadType, type, "type").value if type is not None else None,
            limit=guard.limit(limit),
            offset=max(0, offset),
        )

    def bead_ready(self, actor: Agent, limit: int = 20) -> list[BeadSummary]:
        self._require(actor, "bead.read", "list ready beads")
        return self._store.beads.ready(limit=guard.limit(limit))

    def bead_claim(self, actor: Agent, bead_id: str | None = None) -> Bead:
        return self._store.beads.get(self.bead_claim_brief(actor, bead_id).id)

    def bead_claim_brief(self, actor: Agent, bead_id: str | None = None) -> BeadBrief:
        """`bead_claim`, returning the claimed bead's state from the claim itself (no second read)."""
        if self.traces is None:
            return self._claim_brief(actor, bead_id)
        start = time.time_ns()
        brief = self._claim_brief(actor, bead_id)
        self.traces.claimed(actor, brief.id, start)
        return brief

    def _claim_brief(self, actor: Agent, bead_id: str | None) -> BeadBrief:
        self._require(actor, "bead.claim", "claim beads")
        lease = self.settings.lease.seconds
        if guard.roles.can(actor.role, "bead.claim.any"):
            return self._store.beads.claim_brief(actor.name, bead_id or None, lease)
        with self._queue_lock:  # check and claim as one step, so parallel claims cannot pass the check together
            hooks = self._hooks()
            if bead_id:
                guard.not_hooked_elsewhere(actor, bead_id, hooks.get(bead_id, set()))
            held = [b.id for b in self._store.beads.held_by(actor.name)]
            target = guard.own_claim(actor, bead_id or None, held, self.settings.limits.polecat_held_beads)
            if target is None:
                target = self._top_unhooked(actor, hooks)
            return self._store.beads.claim_brief(actor.name, target, lease)

    def _hooks(self) -> dict[str, set[str]]:
        """Bead id -> the live (or requested) agents whose hook it is on: slung to them or reserved for them."""
        hooks: dict[str, set[str]] = {}
        for a in self._store.agents.live(starting=True):
            if a.metadata.get("hook"):
                hooks.setdefault(str(a.metadata["hook"]), set()).add(a.name)
        return hooks

    def _top_unhooked(self, actor: Agent, hooks: dict[str, set[str]]) -> str:
        for bead in self._store.beads.ready(limit=500):
            if actor.name in hooks.get(bead.id, {actor.name}):
                return bead.id
        raise NotFound("no ready beads right now; check back later or create one with bead_create")

    def bead_update(
        self,
        actor: Agent,
        bead_id: str,
        *,
        status: str | None = None,
        reason: str = "",
        title: str | None = None,
        description: str | None = None,
        acceptance: str | None = None,
        notes: str | None = None,
        type: str | None = None,
        priority: int | None = None,
        labels: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Bead:
        own = self._own_only(actor, "bead.update", "update", bead_id)
        if own:
            others = {"title": title, "description": description, "acceptance": acceptance, "type": type}
            extra = [
                k
                for k, v in {**others, "priority": priority, "labels": labels, "metadata": metadata}.items()
                if v is not None
            ]
            if extra:
                raise Forbidden(
                    f"{actor.name} may change only notes and set status blocked on its bead, not {', '.join(extra)}"
                )
            if status is not None and status != BeadStatus.blocked.value:
                raise Forbidden(
                    f"{actor.name} may only set status 'blocked' (with a reason); use bead_complete "
                    "or bead_release for the rest"
                )
        fields: dict[str, Any] = {
            "title": guard.title(title) if title is not None else None,
            "description": guard.text("description", description) if description is not None else None,
            "acceptance": guard.text("acceptance", acceptance) if acceptance is not None else None,
            "notes": guard.text("notes", notes) if notes is not None else None,
            "type": guard.choice(BeadType, type, "type").value if type is not None else None,
            "priority": guard.priority(priority) if priority is not None else None,
            "labels": guard.labels(labels) if labels is not None else None,
            "metadata": metadata,
        }
        require = actor.name if own else None
        bead = None
        if any(v is not None for v in fields.values()):
            bead = self._store.beads.edit(actor.name, bead_id, fields, require)
        if status is not None:
            target = guard.choice(BeadStatus, status, "status")
            bead = self._store.beads.transition(
                actor.name, bead_id, target, guard.text("reason", reason, 2000), require
            )
        if bead is None:
            raise InvalidInput("nothing to update: pass status or at least one field to change")
        if status is not None:
            self._intent_recorded()  # a status change can make work ready
        return bead

    def bead_comment(self, actor: Agent, bead_id: str, body: str) -> int:
        self._require(actor, "bead.comment", "comment on beads")
        if not body.strip():
            raise InvalidInput("a comment needs a body")
        return self._store.beads.comment(actor.name, bead_id, guard.text("body", body))

    def bead_complete(
        self, actor: Agent, bead_id: str, summary: str, branch: str | None = None, commit: str | None = None
    ) -> Bead:
        return self._store.beads.get(self.bead_complete_brief(actor, bead_id, summary, branch, commit).id)

    def bead_complete_brief(
        self, actor: Agent, bead_id: str, summary: str, branch: str | None = None, commit: str | None = None
    ) -> BeadBrief:
        """`bead_complete`, returning the bead's state from the completion itself (no second read)."""
        if self.traces is None:
            return self._complete_brief(actor, bead_id, summary, branch, commit)
        start = time.time_ns()
        try:
            brief = self._complete_brief(actor, bead_id, summary, branch, commit)
        except GastownError as exc:
            self.traces.completed(actor, bead_id, start, str(exc))
            raise
        self.traces.completed(actor, bead_id, start)
        return brief

    def _complete_brief(
        self, actor: Agent, bead_id: str, summary: str, branch: str | None, commit: str | None
    ) -> BeadBrief:
        if self._hands_in(actor):
            self._off_loop("a hand-in (git)")
        own = self._own_only(actor, "bead.complete", "complete", bead_id)
        if not summary.strip():
            raise InvalidInput("completing a bead needs a summary of what was done")
        if own and self._hand_in(actor, bead_id, guard.text("summary", summary)) is not None:
            return self._store.beads.brief(bead_id)  # done, awaiting merge: the town checked and queued its commit
        if branch is None and actor.metadata.get("branch"):
            branch = str(actor.metadata["branch"])  # the agent's own branch
        result = BeadResult(
            summary=guard.text("summary", summary),
            branch=guard.text("branch", branch, 300) or None,
            commit=guard.text("commit", commit, 100) or None,
        )
        done = self._store.beads.complete_brief(actor.name, bead_id, result, actor.name if own else None)
        self._intent_recorded()
        return done

    def bead_release(self, actor: Agent, bead_id: str, reason: str = "") -> Bead:
        own = self._own_only(actor, "bead.release", "release", bead_id)
        why = guard.text("reason", reason, 2000)
        released = self._store.beads.release(actor.name, bead_id, why, actor.name if own else None)
        self._intent_recorded()
        return released

    def bead_link(self, actor: Agent, bead_id: str, other: str, kind: str = "blocks") -> Dep:
        self._require(actor, "bead.link", "link beads")
        return self._store.beads.link(actor.name, bead_id, other, guard.choice(DepKind, kind, "kind"))

    # -- supervision (witness) ---------------------------------------------------------------------
    def held_by(self, actor: Agent, name: str) -> list[BeadSummary]:
        """The beads an agent holds (claimed, with a live or expired lease)."""
        self._require(actor, "bead.read", "list beads")
        return self._store.beads.held_by(name)

    def expired_leases(self, actor: Agent, at: float | None = None) -> list[BeadSummary]:
        """Claimed beads whose holder made no call before the lease ran out (at `at`, default now)."""
        self._require(actor, "bead.release.any", "look for expired leases")
        return self._store.beads.expired(now_iso(at))

    def requeue(self, actor: Agent, bead_id: str, reason: str) -> Bead:
        """Take a bead back from a dead or silent holder; after `max_attempts` failures it is blocked."""
        self._require(actor, "bead.release.any", "requeue beads")
        return self._store.beads.release(
            actor.name,
            bead_id,
            guard.text("reason", reason, 2000),
            None,
            block_after=self.settings.witness.max_attempts,
        )

    def block(self, actor: Agent, bead_id: str, reason: str) -> Bead:
        self._require(actor, "bead.release.any", "block beads")
        return self._store.beads.transition(actor.name, bead_id, BeadStatus.blocked, reason, None)
