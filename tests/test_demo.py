"""The main job (`make demo`) runs end to end on a small town and verifies itself from the event log."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
from rich.console import Console

from gastown_mcp.config import Settings
from gastown_mcp.demo import run_demo
from gastown_mcp.store import Store


async def test_the_demo_finishes_every_bead_once_over_http(tmp_path: Path) -> None:
    out = io.StringIO()
    with anyio.fail_after(60):
        result = await run_demo(
            polecats=4, beads=16, work=(0.01, 0.03), console=Console(file=out, width=120), town_dir=tmp_path / "t"
        )
    assert result.ok
    assert result.done == result.total == 17  # 16 planned + the side-work bead
    assert result.double_claims == 0 and result.takeovers == 0
    assert sum(result.completed_by.values()) == result.total
    assert result.side_bead is not None
    assert result.nudge is not None and result.nudge.startswith("NUDGE from mayor")
    text = out.getvalue()
    assert "Gas Town demo" in text and "double-claims (from events)" in text and "none double-worked" in text

    store = Store(Settings(town_dir=tmp_path / "t"))
    try:
        side = store.beads.get(result.side_bead)
        assert side.created_by == "polecat-1"
        assert [d.kind.value for d in side.deps if d.bead_id == side.id] == ["discovered_from"]
        assert store.beads.counts() == {"done": 17}
    finally:
        store.close()
