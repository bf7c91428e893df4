"""Rigs and merge requests in the town API: registering projects, the checked hand-in of a polecat's branch,
and the steps the merge queue takes to land work on `main` (candidates, gates in a container, the move).

A polecat completing a bead on a rig hands its branch in: the town fetches it with fsck into the rig, the bead
becomes done-awaiting-merge and a merge request is queued. Only the merge queue moves `main`, with a
compare-and-swap, and only to a commit whose exact tree passed the rig's gates.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gastown_mcp import rigs
from gastown_mcp.errors import GastownError, InvalidInput, RuntimeUnavailable
from gastown_mcp.models import Agent, BeadResult, BeadStatus, MergeRequest, MergeState
from gastown_mcp.runtime.protocol import WORK_DIR, ContainerStatus, LaunchSpec, Limits, Mount
from gastown_mcp.town import guard
from gastown_mcp.town.fleet import FleetAPI

GATE_LOG_LINES = 60
# Gates and verify commands run in a writable copy of the read-only candidate tree, without its .git file.
FRESH_TREE = f"rm -rf /tmp/tree && cp -a {WORK_DIR}/. /tmp/tree && rm -f /tmp/tree/.git && cd /tmp/tree"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    log_tail: str
    detail: str = ""  # what failed, when it is known more exactly than "the gates" (a verify criterion)


@dataclass(frozen=True)
class RigInfo:
    name: str
    repo: str
    main: str


class MergesAPI(FleetAPI):
    # -- rigs --------------------------------------------------------------------------------------
    def rig_add(self, actor: Agent, name: str, source: str) -> RigInfo:
        """Register a project: the town keeps its own clone, which only the town writes."""
        self._require(actor, "town.admin", "add rigs")
        rig = rigs.add_rig(self.settings.town_dir, name, source)
        return RigInfo(rig.name, str(rig.repo), rigs.main_commit(rig))

    def rig_list(self, actor: Agent) -> list[RigInfo]:
        self._require(actor, "bead.read", "list rigs")
        return [RigInfo(r.name, str(r.repo), rigs.main_commit(r)) for r in rigs.list_rigs(self.settings.town_dir)]

    def rig_remove(self, actor: Agent, name: str) -> None:
        self._require(actor, "town.admin", "remove rigs")
        rigs.remove_rig(self.settings.town_dir, name)

    def rig_log(self, actor: Agent, name: str, ref: str = rigs.MAIN, limit: int = 20) -> list[str]:
        """Subjects of the newest commits on a rig's branch or ref (`main` by default)."""
        self._require(actor, "bead.read", "read a rig's history")
        return rigs.log(rigs.get_rig(self.settings.town_dir, name), ref, guard.limit(limit))

    # -- the hand-in (from bead_complete) ------------------------------------------------------------
    def _hands_in(self, actor: Agent) -> bool:
        """Whether the caller has a repository of its own on a rig (its completion is a hand-in)."""
        return actor.rig is not None and bool(actor.metadata.get("branch")) and bool(actor.metadata.get("worktree"))

    def _hand_in(self, actor: Agent, bead_id: str, summary: str) -> MergeRequest | None:
        """Take the caller's branch in and finish the bead awaiting merge; None when the caller has no repository
        of its own on a rig (its bead completes the ordinary way)."""
        if actor.rig is None or not self._hands_in(actor):
            return None
        branch = actor.metadata["branch"]
        rig = rigs.get_rig(self.settings.town_dir, actor.rig)
        taken = rigs.hand_in(rigs.open_agent_repo(rig, actor.name, str(branch)), bead_id)
        result = BeadResult(summary=summary, branch=taken.ref, commit=taken.commit, base=taken.base)
        return self._store.merges.hand_in(actor.name, bead_id, result, actor.name, rig.name, taken.ref)

    # -- merge requests (refinery, mayor, operator) --------------------------------------------------
    def merge_list(
        self, actor: Agent, *, rig: str | None = None, state: Sequence[str] = (), limit: int = 50
    ) -> list[MergeRequest]:
        self._require(actor, "merge.read", "list merge requests")
        states = [guard.choice(MergeState, s, "state").value for s in state]
        return self._store.merges.search(rig=rig, states=states, limit=guard.limit(limit))

    def merge_show(self, actor: Agent, request_id: int) -> MergeRequest:
        self._require(actor, "merge.read", "read merge requests")
        return self._store.merges.get(request_id)

    def merge_retry(self, actor: Agent, request_id: int) -> MergeRequest:
        """Queue an ended request again (after a flaky gate or a fixed main), its bead back to awaiting merge."""
        self._require(actor, "merge.admin", "retry merge requests")
        return self._store.merges.retry(actor.name, request_id)

    def merge_reject(self, actor: Agent, request_id: int, reason: str) -> MergeRequest:
        """Refuse a queued request: its bead goes back for rework with the reason as a comment."""
        self._require(actor, "merge.admin", "reject merge requests")
        if not reason.strip():
            raise InvalidInput("rejecting a merge request needs a reason the next polecat can act on")
        request, status = self._store.merges.hand_back(
            actor.name,
            request_id,
            MergeState.rejected,
            guard.text("reason", reason, 2000),
            f"Merge request {request_id} was rejected by {actor.name}: {reason}",
            block_after=self.settings.witness.max_attempts,
        )
        self._after_hand_back(actor, request, status, f"rejected: {reason}")
        return request

    # -- the merge queue's steps (supervisor/merge_queue.py) ---------------------------------------------
    def merge_rigs_with_work(self, actor: Agent) -> list[str]:
        self._require(actor, "merge.admin", "run the merge queue")
        return self._store.merges.rigs_with_work()

    def merge_queue(self, actor: Agent, rig: str, state: MergeState = MergeState.queued) -> list[MergeRequest]:
        self._require(actor, "merge.admin", "run the merge queue")
        return self._store.merges.queue(rig, state)

    def merge_start(self, actor: Agent, ids: Sequence[int]) -> None:
        self._require(actor, "merge.admin", "run the merge queue")
        self._store.merges.start(actor.name, ids)

    def merge_main(self, actor: Agent, rig: str) -> str:
        self._require(actor, "merge.admin", "run the merge queue")
        return rigs.main_commit(rigs.get_rig(self.settings.town_dir, rig))

    def merge_on_main(self, actor: Agent, rig: str, commit: str) -> bool:
        self._require(actor, "merge.admin", "run the merge queue")
        return rigs.is_on_main(rigs.get_rig(self.settings.town_dir, rig), commit)

    def merge_candidate(self, actor: Agent, rig: str, base: str, requests: Sequence[MergeRequest]) -> rigs.Candidate:
        """`base` plus each request's branch in order, in the rig's scratch tree; conflicting ones are skipped."""
        self._require(actor, "merge.admin", "run the merge queue")
        mode = self.settings.rig(rig).mode
        tips = [(str(r.id), r.tip) for r in requests]
        return rigs.build_candidate(rigs.get_rig(self.settings.town_dir, rig), base, tips, mode)

    def merge_gates(self, actor: Agent, rig: str, candidate: rigs.Candidate) -> GateResult:
        """Run the rig's gates on the candidate tree in a hardened container (no network, the tree read-only,
        a scratch copy writable); no gates configured means nothing to run and a pass."""
        self._require(actor, "merge.admin", "run the merge queue")
        cfg = self.settings.rig(rig)
        if not cfg.gates:
            return GateResult(True, "no gates configured for this rig")
        script = " && ".join(f"( {g} )" for g in cfg.gates)
        passed, status, lines = self._in_gate_container(rig, candidate, f"{FRESH_TREE} && {script}", GATE_LOG_LINES)
        verdict = "passed" if passed else f"failed ({status.reason or status.state}, exit {status.exit_code})"
        return GateResult(passed, f"{lines.rstrip()}\n[gates {verdict}]")

    def _in_gate_container(
        self, rig: str, candidate: rigs.Candidate, script: str, log_lines: int
    ) -> tuple[bool, ContainerStatus, str]:
        """Run `script` in a hardened container over the candidate tree (read-only at WORK_DIR, no network,
        polecat limits, the rig's gate timeout): whether it exited 0, how it ended, and its log tail."""
        cfg = self.settings.rig(rig)
        fleet = self._fleet
        if fleet is None:
            raise RuntimeUnavailable("gates run in containers: start the town with `gastown up` (a container runtime)")
        name = f"gate-{secrets.token_hex(4)}"
        command = ["sh", "-c", script]
        limits = replace(fleet.config.limits.get("polecat") or Limits(), wallclock_s=cfg.gate_timeout_seconds)
        spec = LaunchSpec(
            town=fleet.config.town,
            agent=name,
            role="gate",
            image=fleet.config.image,
            command=command,
            env={"GASTOWN_RIG": rig, "GASTOWN_CANDIDATE": candidate.commit},
            mounts=(Mount(candidate.path, WORK_DIR, read_only=True),),
            network=None,  # gates get no network at all
            limits=limits,
        )
        try:
            fleet.runtime.launch(spec)
            status = fleet.runtime.wait(fleet.config.town, name, cfg.gate_timeout_seconds + 60)
            lines = fleet.runtime.logs(fleet.config.town, name, log_lines)
        finally:
            with contextlib.suppress(GastownError):
                fleet.runtime.remove(fleet.config.town, name)
        return status.state == "exited" and status.exit_code == 0, status, lines

    def merge_land(self, actor: Agent, rig: str, ids: Sequence[int], new: str, old: str, gate_runs: int) -> bool:
        """Move main from `old` to `new` (compare-and-swap) and mark the requests merged; False when main moved
        meanwhile (nothing changed; the caller tries again on the new main)."""
        self._require(actor, "merge.admin", "run the merge queue")
        repo = rigs.get_rig(self.settings.town_dir, rig)
        self._store.merges.set_landing(ids, new, gate_runs)  # written first: a crash after the move is seen
        remote = self.settings.rig(rig).push
        if remote is not None:
            # The remote first, as a plain fast-forward: if someone else moved its main, nothing lands here
            # either; main follows theirs (never forced over it) and the requests are tried again on top.
            refused = rigs.push_main(repo, remote, new)
            if refused is not None:
                self._store.merges.set_landing(ids, None)
                rigs.follow_remote_main(repo, remote)
                return False
        if not rigs.move_main(repo, new, old):
            self._store.merges.set_landing(ids, None)
            return False
        self._store.merges.merged(actor.name, ids, new)
        self._intent_recorded()  # beads waiting on these are ready now
        if self.traces is not None:
            self.traces.landed(rig, [self._store.merges.get(i) for i in ids], new)
        return True

    def merge_requeue(self, actor: Agent, ids: Sequence[int], why: str) -> None:
        self._require(actor, "merge.admin", "run the merge queue")
        for rid in ids:
            self._store.merges.requeue(actor.name, rid, why)

    def merge_count_gate_runs(self, actor: Agent, ids: Sequence[int], runs: int) -> None:
        self._require(actor, "merge.admin", "run the merge queue")
        self._store.merges.set_landing(ids, None, runs)

    def merge_recover(self, actor: Agent, rig: str) -> list[int]:
        """After a restart: requests left in testing are merged if main holds what they were landing, else
        queued again. Returns the ids found merged."""
        self._require(actor, "merge.admin", "run the merge queue")
        repo = rigs.get_rig(self.settings.town_dir, rig)
        merged = []
        for request in self._store.merges.queue(rig, MergeState.testing):
            if request.landing and rigs.is_on_main(repo, request.landing):
                self._store.merges.merged(actor.name, [request.id], request.landing)
                merged.append(request.id)
            else:
                self._store.merges.requeue(actor.name, request.id, "the town restarted while it was being tested")
        return merged

    def merge_hand_back(
        self, actor: Agent, request: MergeRequest, state: MergeState, detail: str, comment: str, log_tail: str = ""
    ) -> MergeRequest:
        """End a request that cannot land (conflicted, failed) and give its bead back for rework."""
        self._require(actor, "merge.admin", "run the merge queue")
        ended, status = self._store.merges.hand_back(
            actor.name,
            request.id,
            state,
            detail,
            comment,
            log_tail=log_tail,
            block_after=self.settings.witness.max_attempts,
        )
        self._after_hand_back(actor, ended, status, detail)
        return ended

    def _after_hand_back(self, actor: Agent, request: MergeRequest, status: BeadStatus | None, why: str) -> None:
        """A bead handed back goes to a fresh polecat on its rig; one blocked by it is news for the mayor."""
        if status is BeadStatus.blocked:
            bead = self._store.beads.get(request.bead_id)
            self.escalate(
                actor,
                f"{request.bead_id} blocked: its work could not land",
                f"{request.bead_id} ({bead.title}) was handed back {bead.attempts} times and is now blocked. "
                f"Last: {why}. Its branch is kept at {request.ref}. Rewrite or split the bead, then unblock it "
                "(`bead_update status=open`).",
            )
        elif status is BeadStatus.open and self.settings.witness.respawn and self._fleet is not None:
            with contextlib.suppress(GastownError):  # slung by someone else first, or no room: nothing is lost
                self.sling(actor, request.bead_id, request.rig)
