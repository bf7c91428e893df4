"""Agent containers: the `Runtime` protocol, its Docker backend, the agent image, town networks, worktrees.

Only this package imports docker. The town composes it: `DockerRuntime.connect()`, `ensure_town_network()`,
`add_rig()`/`create_worktree()`, then `runtime.launch(LaunchSpec(...))`.
"""

from gastown_mcp.runtime.protocol import (
    ContainerStatus,
    LaunchSpec,
    Limits,
    Mount,
    Runtime,
)

__all__ = ["ContainerStatus", "LaunchSpec", "Limits", "Mount", "Runtime"]
