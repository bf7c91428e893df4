# ruff: noqa: F811  (the CLI fixtures come from test_cli and are redefined as parameters)
"""`gastown plan`, `plan apply`, `convoy list|show` and `bead import` as a user types them, beside a running
town whose gateway reaches the scripted stand-in (served on loopback from threads, and found through
run/town.json as `gastown up` leaves it)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from planning import planning_services
from test_cli import as_json, assert_one_error_line, gt, run, town_dir  # noqa: F401  (fixtures)

from gastown_mcp.config import load_settings
from gastown_mcp.runstate import RunState, state_path
from gastown_mcp.store import Store

GOAL = "Add a notes command line"


@pytest.fixture
def standin(town_dir: Path) -> Iterator[Any]:
    """The town's gateway and the stand-in behind it, running, and run/town.json saying where."""
    settings = load_settings(town_dir)
    store = Store(settings)
    try:
        with planning_services(store, settings) as (_town, standin, gateway):
            mcp = "http://127.0.0.1:9/mcp"  # not called by these commands
            state = RunState(pid=os.getpid(), started_at=time.time(), mcp_url=mcp, gateway_url=gateway)
            path = state_path(settings)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(state.model_dump_json())
            yield standin
    finally:
        store.close()


def test_a_dry_run_prints_the_plan_as_a_tree_and_creates_nothing(gt: Any, standin: Any) -> None:
    out = gt("plan", GOAL, "--dry-run").stdout
    assert "(6 beads)" in out and "scaffold" in out and "verify: test -f src/pkg/cli.py" in out
    assert "1 planner request(s)" in out
    assert as_json(gt("bead", "list", "--json")) == []
    assert len(standin.requests) == 1


def test_a_reviewed_json_plan_is_applied_and_the_convoy_shows_its_progress(
    gt: Any,
    standin: Any,
    tmp_path: Path,
) -> None:
    plan = gt("plan", GOAL, "--dry-run", "--json").stdout
    assert as_json(gt("bead", "list", "--json")) == []
    reviewed = tmp_path / "plan.json"
    reviewed.write_text(plan)
    convoy = as_json(gt("plan", "apply", str(reviewed), "--json"))
    assert len(convoy["beads"]) == 6 and convoy["progress"]["open"] == 6 and not convoy["landed"]
    [listed] = as_json(gt("convoy", "list", "--json"))
    assert listed["id"] == convoy["id"]
    shown = gt("convoy", "show", convoy["id"]).stdout
    assert convoy["id"] in shown and "scaffold" in shown
    ready = {b["id"] for b in as_json(gt("bead", "ready", "--json"))}
    keys = {b["key"]: b["id"] for b in convoy["beads"]}
    assert ready == {keys["scaffold"], keys["fixtures"]}  # only the roots


def test_plan_creates_the_convoy_at_once_from_a_goal_in_a_file(gt: Any, standin: Any, tmp_path: Path) -> None:
    goal = tmp_path / "goal.md"
    goal.write_text(GOAL + "\n")
    out = gt("plan", "--from", str(goal), "ignored").stdout
    assert "(6 beads)" in out
    [convoy] = as_json(gt("convoy", "list", "--json"))
    assert len(convoy["beads"]) == 6
    assert GOAL in str(standin.requests[0].body["messages"])


def test_a_malformed_plan_from_the_model_is_one_error_line_listing_nothing_created(gt: Any, standin: Any) -> None:
    result = gt("plan", f"{GOAL} [cycle]", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.stdout + result.stderr
    assert "refused after a repair round; nothing was created" in result.stderr
    assert "dependency cycle" in result.stderr
    assert as_json(gt("bead", "list", "--json")) == []


def test_bead_import_takes_jsonl_checked_like_a_plan(gt: Any, tmp_path: Path) -> None:
    good = tmp_path / "beads.jsonl"
    good.write_text(
        '{"key": "a", "title": "first", "complexity": 1, "acceptance": [{"text": "ok", "verify": "true"}]}\n'
        '{"key": "b", "title": "second", "complexity": 2, "depends_on": ["a"], '
        '"acceptance": [{"text": "ok", "verify": "true"}]}\n'
    )
    convoy = as_json(gt("bead", "import", str(good), "--title", "By hand", "--json"))
    assert convoy["title"] == "By hand" and [b["key"] for b in convoy["beads"]] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "c", "title": "no criterion", "complexity": 1}\n')
    result = gt("bead", "import", str(bad), ok=False)
    assert result.exit_code == 2 and "no acceptance criterion" in result.stderr  # bad input
    assert len(as_json(gt("bead", "list", "--json"))) == 3  # the first convoy and its two beads, nothing more


def test_plan_without_a_running_town_says_how_to_start_one(gt: Any) -> None:
    result = gt("plan", GOAL, ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.stdout + result.stderr
    assert "gastown up" in result.stderr


def test_bead_import_of_a_missing_or_garbled_file_is_one_error_line(gt: Any, tmp_path: Path) -> None:
    assert_one_error_line(gt("bead", "import", str(tmp_path / "nope.jsonl"), ok=False), 2, "cannot read")
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text('{"key": "a",\n')
    assert_one_error_line(gt("bead", "import", str(garbled), ok=False), 2, "neither JSON nor JSONL")
