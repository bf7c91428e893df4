"""Hand-written fakes for the tests that do not need the real engine: a container runtime as a dict, one
that cannot start anything, and a clock tests move by hand. Tests that need real containers use Docker."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable

from gastown_mcp.errors import RuntimeUnavailable
from gastown_mcp.runtime.protocol import ContainerStatus, LaunchSpec


class FakeRuntime:
    """Containers as a dict: tests set their state; `stop` records who was stopped."""

    def __init__(self) -> None:
        self.containers: dict[str, ContainerStatus] = {}
        self.stopped: builtins.list[str] = []
        self.frozen: set[str] = set()

    def run(
        self,
        agent: str,
        state: str = "running",
        reason: str | None = None,
        code: int | None = None,
        generation: int = -1,
    ) -> None:
        """Set a container's state; it keeps the generation it was launched with unless one is given."""
        old = self.containers.get(agent)
        generation = generation if generation >= 0 else (old.generation if old else 1)
        self.containers[agent] = ContainerStatus(
            agent=agent,
            town="town",
            role="polecat",
            container_id=f"c-{agent}",
            state=state,  # type: ignore[arg-type]
            exit_code=code,
            reason=reason,  # type: ignore[arg-type]
            generation=generation,
        )

    def launch(self, spec: LaunchSpec) -> ContainerStatus:
        self.run(spec.agent, generation=spec.generation)
        return self.containers[spec.agent]

    def stop(self, town: str, agent: str, timeout_s: float = 10) -> ContainerStatus:
        self.stopped.append(agent)
        self.run(agent, "exited", "killed", 137)
        return self.containers[agent]

    def status(self, town: str, agent: str) -> ContainerStatus:
        return self.containers[agent]

    def logs(self, town: str, agent: str, tail: int = 200) -> str:
        return ""

    def wait(self, town: str, agent: str, timeout_s: float) -> ContainerStatus:
        return self.containers[agent]

    def list(self, town: str) -> builtins.list[ContainerStatus]:
        return builtins.list(self.containers.values())

    def remove(self, town: str, agent: str) -> None:
        self.containers.pop(agent, None)

    def cleanup(self, town: str, agents: Iterable[str] | None = None) -> builtins.list[str]:
        gone = builtins.list(self.containers) if agents is None else builtins.list(agents)
        for agent in gone:
            self.containers.pop(agent, None)
        return gone

    def reap_expired(self, town: str | None = None, now: float | None = None) -> builtins.list[ContainerStatus]:
        return []

    def pause(self, town: str, agent: str) -> bool:
        status = self.containers.get(agent)
        if status is None or status.state != "running" or agent in self.frozen:
            return False
        self.frozen.add(agent)
        return True

    def unpause(self, town: str, agent: str) -> bool:
        if agent not in self.frozen:
            return False
        self.frozen.discard(agent)
        return True

    def paused(self, town: str) -> builtins.list[str]:
        return sorted(self.frozen)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class BrokenEngine(FakeRuntime):
    """An engine that creates no container that can start (as Docker without AppArmor's parser does)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def launch(self, spec: LaunchSpec) -> ContainerStatus:
        self.attempts += 1
        raise RuntimeUnavailable(f"launching agent {spec.agent}: its container could not start: apparmor_parser")
