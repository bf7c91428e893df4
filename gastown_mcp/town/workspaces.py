"""Agent repositories over the network: the town's side of git smart HTTP for agents on other machines.

An agent whose repository is not mounted (the swarm backend) clones it from the town with its own token and
pushes its branch back the same way. The town serves only the caller's own repository, accepts only updates of
branches in its own namespace (`refs/heads/polecat/<agent>/...`, no deletions), checks every pushed object
(`receive.fsckObjects`) and runs no hook. The hand-in then reads the branch from that repository exactly as it
does for a mounted one (`rigs.hand_in`): one rule for both.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gastown_mcp import rigs
from gastown_mcp.errors import Forbidden, InvalidInput, NotFound
from gastown_mcp.models import Agent, AgentState
from gastown_mcp.town.fleet import FleetAPI

SERVICES = ("git-upload-pack", "git-receive-pack")
WORKSPACE_HTTP = "http"  # an agent's `workspace` metadata: its repository reaches it over git smart HTTP
ZERO = "0" * 40
# The town's git for serving agents: no system or user config, no hooks, every received object checked.
SERVE_CONFIG = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "receive.fsckObjects=true",
    "-c", "transfer.fsckObjects=true",
    "-c", "receive.denyDeletes=true",
    "-c", "receive.denyCurrentBranch=ignore",  # the town never uses the work tree of an agent's repository
    "-c", "uploadpack.allowAnySHA1InWant=false",
)  # fmt: skip


@dataclass(frozen=True)
class GitReply:
    content_type: str
    body: bytes


def pkt_lines(data: bytes) -> tuple[list[bytes], int]:
    """The pkt-lines before the first flush packet, and where the rest (the pack) starts."""
    lines: list[bytes] = []
    pos = 0
    while True:
        head = data[pos : pos + 4]
        if len(head) < 4:
            raise InvalidInput("the push request ended before its command list did")
        try:
            size = int(head, 16)
        except ValueError:
            raise InvalidInput("the push request is not in git's pkt-line format") from None
        if size == 0:
            return lines, pos + 4
        if size < 4 or pos + size > len(data):
            raise InvalidInput("the push request has a pkt-line of a bad length")
        lines.append(data[pos + 4 : pos + size])
        pos += size


def check_push(agent: str, body: bytes) -> list[str]:
    """The refs a push updates, each one checked: only branches under `refs/heads/polecat/<agent>/`, none
    deleted. Raises `Forbidden` naming the first ref refused."""
    own = f"refs/heads/polecat/{agent}/"
    lines, _ = pkt_lines(body)
    refs = []
    for raw in lines:
        command = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
        if command.startswith("shallow "):
            continue
        parts = command.split(" ")
        if len(parts) != 3:
            raise InvalidInput(f"the push request has a malformed command {command[:200]!r}")
        _old, new, ref = parts
        if not ref.startswith(own) or ".." in ref:
            raise Forbidden(f"{agent} may push only its own branches ({own}...), not {ref}")
        if new == ZERO:
            raise Forbidden(f"{agent} may not delete {ref}")
        refs.append(ref)
    if not refs:
        raise InvalidInput("the push request names no ref to update")
    return refs


def run_git(service: str, git_dir: Path, body: bytes | None) -> bytes:
    """`git upload-pack|receive-pack --stateless-rpc` in `git_dir` (advertising refs when `body` is None)."""
    # The repository belongs to the agent user; git refuses to serve another user's repository unless told.
    args = ["git", *SERVE_CONFIG, "-c", f"safe.directory={git_dir}", service.removeprefix("git-"), "--stateless-rpc"]
    if body is None:
        args.append("--advertise-refs")
    done = subprocess.run(
        [*args, str(git_dir)],
        input=body or b"",
        capture_output=True,
        check=False,
        timeout=600,
        env={**os.environ, **rigs.GIT_ENV},
    )
    if done.returncode != 0 and not done.stdout:
        raise InvalidInput(f"git {service} failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
    return done.stdout


def _pkt(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


class WorkspacesAPI(FleetAPI):
    def workspace_git_dir(self, actor: Agent, agent: str) -> Path:
        """The git directory of `agent`'s repository, for `agent` itself only and only when it is served over
        HTTP (a mounted repository's config is the agent's to write, so the town never runs git in it)."""
        self._require(actor, "bead.read", "fetch a repository")
        if actor.name != agent:
            raise Forbidden(f"{actor.name} may fetch and push only its own repository, not {agent}'s")
        # A container clones while its launch is still under way, before the launch records its metadata: a
        # starting agent of a town whose agents all work over the network counts as one.
        remote = actor.metadata.get("workspace") == WORKSPACE_HTTP or (
            actor.state is AgentState.starting and self._fleet is not None and self._fleet.config.git_url is not None
        )
        if not remote or not actor.rig:
            raise NotFound(f"{agent} has no repository served over the network (its work is mounted, or none)")
        rig = rigs.get_rig(self.settings.town_dir, actor.rig)
        return rigs.open_agent_repo(rig, agent, str(actor.metadata.get("branch") or "")).git_dir

    def workspace_git(self, actor: Agent, agent: str, service: str, body: bytes | None) -> GitReply:
        """One round of git smart HTTP: the ref advertisement (`body` None) or an upload-pack/receive-pack
        exchange. A push is checked before git sees it (see `check_push`)."""
        if service not in SERVICES:
            raise InvalidInput(f"unknown git service {service!r}; use one of {', '.join(SERVICES)}")
        git_dir = self.workspace_git_dir(actor, agent)
        if body is None:
            head = _pkt(f"# service={service}\n") + b"0000"
            return GitReply(f"application/x-{service}-advertisement", head + run_git(service, git_dir, None))
        if service == "git-receive-pack":
            check_push(agent, body)
        return GitReply(f"application/x-{service}-result", run_git(service, git_dir, body))
