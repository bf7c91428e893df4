"""The merge queue: deterministic code that lands handed-in work on `main`, one rig at a time.

Each `tick()` takes up to `batch_size` queued requests of a rig, rebases them onto `main` in the town's
scratch tree, runs the rig's gates on that exact tree in a container, then the deacon's checks (each landing
bead's verify commands, and a model review where the rig asks for one), and moves `main` there with a
compare-and-swap. A red batch is bisected: a green half lands at once and the other half is known red, so a
single culprit is named in at most 1 + log2(batch) gate runs while the rest land. A request that conflicts or
fails goes back to its bead with what to fix, and the bead to a fresh polecat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gastown_mcp.errors import GastownError
from gastown_mcp.models import MergeRequest, MergeState, Role, Verb
from gastown_mcp.town import Town, system_agent
from gastown_mcp.town.merges import GateResult


@dataclass(frozen=True)
class Step:
    """One thing the merge queue did, for logs and tests."""

    verb: Verb
    target: str
    reason: str


class MergeQueue:
    def __init__(self, town: Town, *, name: str = "refinery") -> None:
        self.town = town
        self.me = system_agent(name, Role.refinery)
        self.gate_runs = 0  # over this queue's life: what batching saves is counted here
        self._recovered: set[str] = set()
        self._pending: list[Step] = []

    def tick(self) -> list[Step]:
        steps: list[Step] = []
        for rig in self.town.merge_rigs_with_work(self.me):
            if rig not in self._recovered:
                steps += self._recover(rig)
            batch = self.town.merge_queue(self.me, rig)[: self.town.settings.rig(rig).batch_size]
            if not batch:
                continue
            self.town.merge_start(self.me, [r.id for r in batch])
            try:
                self._settle(rig, batch, known_red=None)
            except GastownError as exc:
                # git or the runtime failed under us: the requests wait in testing and are recovered next start.
                steps.append(Step(Verb.merge_testing, rig, f"merge queue stopped on {rig}: {exc}"))
                self._recovered.discard(rig)
        return steps + self._drain()

    # -- the algorithm -----------------------------------------------------------------------------
    def _settle(self, rig: str, batch: Sequence[MergeRequest], *, known_red: GateResult | None) -> bool:
        """Land what of `batch` is good; True when all of it landed. `known_red` is the failed run of a batch
        whose left half just landed: the culprit is in this (right) half, so it is not run again."""
        base = self.town.merge_main(self.me, rig)
        candidate = self.town.merge_candidate(self.me, rig, base, batch)
        clashing = []
        for request in batch:
            if str(request.id) not in candidate.conflicts:
                continue
            alone = self.town.merge_candidate(self.me, rig, base, [request])
            if str(request.id) in alone.conflicts:
                self._conflicted(request, base, alone.conflicts[str(request.id)])
            else:
                clashing.append(request)  # it clashes only with a batch mate: try it again on the new main
        if clashing:
            self.town.merge_requeue(self.me, [r.id for r in clashing], "clashed with another request in its batch")
        applied = [r for r in batch if str(r.id) in candidate.applied]
        if clashing and applied:
            candidate = self.town.merge_candidate(self.me, rig, base, applied)  # the scratch tree was reused
        if not applied:
            return False
        all_applied = len(applied) == len(batch)
        red = known_red
        if red is None:
            result = self.town.merge_gates(self.me, rig, candidate)
            self.gate_runs += 1
            self.town.merge_count_gate_runs(self.me, [r.id for r in applied], 1)
            if result.passed:  # the deacon: every landing bead's verify commands, on the same tree
                result = self.town.merge_verify(self.me, rig, candidate, applied)
            if result.passed and self._reviewed_out(rig, applied, base):
                return False
            if result.passed:
                ids = [r.id for r in applied]
                if self.town.merge_land(self.me, rig, ids, candidate.commit, base, 0):
                    self._log(Verb.merge_merged, applied, f"on main at {candidate.commit[:10]}")
                    return all_applied
                # main moved under us (not by this queue): they are tried again on the new main next tick.
                self.town.merge_requeue(self.me, ids, "main moved while it was tested")
                return False
            red = result
        if len(applied) == 1:
            self._failed(applied[0], base, red)
            return False
        half = len(applied) // 2
        left, right = applied[:half], applied[half:]
        if self._settle(rig, left, known_red=None):
            self._settle(rig, right, known_red=red)  # the culprit is on the right
        else:
            self._settle(rig, right, known_red=None)
        return False

    def _reviewed_out(self, rig: str, applied: Sequence[MergeRequest], base: str) -> bool:
        """The rig's model review (if any) of work whose gates and verify commands passed: a request it sends
        back goes back like a red one, and its batch mates are tried again without it. True when any went."""
        rejected = self.town.merge_review(self.me, rig, applied)
        if not rejected:
            return False
        gone = {r.id for r, _ in rejected}
        for request, why in rejected:
            self._failed(request, base, GateResult(False, "", f"the deacon's review sent it back: {why}"))
        rest = [r.id for r in applied if r.id not in gone]
        if rest:
            self.town.merge_requeue(self.me, rest, "a batch mate was sent back by review; tried again without it")
        return True

    def _recover(self, rig: str) -> list[Step]:
        merged = self.town.merge_recover(self.me, rig)
        self._recovered.add(rig)
        return [Step(Verb.merge_merged, str(rid), "found on main after a restart") for rid in merged]

    # -- outcomes ----------------------------------------------------------------------------------
    def _conflicted(self, request: MergeRequest, base: str, files: Sequence[str]) -> None:
        listed = ", ".join(files)
        detail = f"conflicts with main at {base[:10]} in {listed}"
        comment = (
            f"Merge request {request.id} could not go onto main (at {base[:10]}): {detail}. The next polecat "
            f"starts from this work ({request.tip[:10]}); rebase it onto main (`git rebase main`), resolve the "
            f"conflicts in {listed}, commit, and complete the bead again."
        )
        self.town.merge_hand_back(self.me, request, MergeState.conflicted, detail, comment)
        self._pending.append(Step(Verb.merge_conflicted, str(request.id), detail))

    def _failed(self, request: MergeRequest, base: str, red: GateResult) -> None:
        detail = red.detail or f"the rig's gates failed on main at {base[:10]} plus this branch"
        log_tail = red.log_tail
        comment = (
            f"Merge request {request.id}: {detail}. The next polecat starts from this work ({request.tip[:10]}); "
            f"make the gates and the bead's acceptance checks pass (see the log below), commit, and complete the "
            f"bead again.\n\n{log_tail[-3000:]}"
        )
        self.town.merge_hand_back(self.me, request, MergeState.failed, detail, comment, log_tail=log_tail[-8000:])
        self._pending.append(Step(Verb.merge_failed, str(request.id), detail))

    def _log(self, verb: Verb, requests: Sequence[MergeRequest], why: str) -> None:
        self._pending.extend(Step(verb, str(r.id), why) for r in requests)

    def _drain(self) -> list[Step]:
        steps, self._pending = self._pending, []
        return steps
