"""The quick path of `gastown bead ready` and `gastown status` (gastown_mcp/cli/quick.py): the same bytes as the
typer command for the same town, in text and JSON, and anything it does not take goes to the typer command.

Each side runs in its own interpreter on a real town on disk: the quick path through `quick.run` (which must
take the command), the typer command through the app itself (`build_app()`), so neither can borrow the other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gastown_mcp.assemble import open_town
from gastown_mcp.cli import quick
from gastown_mcp.config import load_settings
from gastown_mcp.errors import InvalidInput
from gastown_mcp.models import ALIVE_STATES, Role
from gastown_mcp.store import glance as store_glance
from gastown_mcp.town import guard, operator, roles
from gastown_mcp.town.budgets import Estimate, Usage

GASTOWN = str(Path(sys.executable).with_name("gastown"))
QUICK = "import sys\nfrom gastown_mcp.cli import quick\ntaken = quick.run(sys.argv[1:])\nsys.exit(0 if taken else 97)\n"
TYPER = "import sys\nfrom gastown_mcp.cli import build_app\nbuild_app()(args=sys.argv[1:], prog_name='gastown')\n"


def _run(code: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GASTOWN_", "COLUMNS", "NO_COLOR", "FORCE_"))}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, env={**clean, **(env or {})})


def quick_out(argv: list[str], env: dict[str, str] | None = None) -> bytes:
    done = _run(QUICK, argv, env)
    assert done.returncode == 0, f"the quick path did not take {argv}: {done.stderr.decode()}"
    return done.stdout


def typer_out(argv: list[str], env: dict[str, str] | None = None) -> bytes:
    done = _run(TYPER, argv, env)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A town made by `gastown init`, with beads in every state, agents, budgets, usage, a model error, a
    pending nudge and an emergency stop."""
    town_dir = tmp_path_factory.mktemp("quick") / "town"
    subprocess.run([GASTOWN, "init", str(town_dir), "--name", "quickville"], check=True, capture_output=True)
    # a lease that lapses at once: a claimed bead is back in the ready list (as a lapsed one) for both paths
    town = open_town(load_settings(town_dir, env={"GASTOWN_LEASE__SECONDS": "0.001"}))
    try:
        op = operator()
        town.agent_add(op, "mayor", "mayor")
        town.agent_add(op, "witness", "witness")
        polecats = [town.agent_add(op, f"polecat-{i}", "polecat", rig="web").agent for i in range(3)]
        beads = [town.bead_create(op, f"bead {i}", priority=i % 5).id for i in range(12)]
        town.bead_create(
            op, "A title long enough to be wrapped in a narrow terminal, with ünïcödé and 漢字", priority=0
        )
        town.bead_link(op, beads[1], beads[0], "blocks")  # blocked by an open bead: not ready
        town.bead_claim(polecats[0], beads[2])  # lease lapsed: listed again
        town.bead_update(op, beads[3], status="blocked", reason="waits on a vendor")
        town.bead_update(op, beads[4], status="cancelled", reason="not needed")
        town.bead_claim(polecats[1], beads[5])
        town.bead_complete(polecats[1], beads[5], "did it")
        town.budget_set(op, "town", tokens=1_000_000, usd=25)
        town.budget_set(op, "agent", "polecat-0", tokens=500)
        town.budget_set(op, "rig", "web", usd=0.5)
        done = town.budgets.reserve("polecat-0", "web", "scripted-standin", Estimate(tokens=10, usd=0.01))
        town.budgets.settle(done, Usage(input_tokens=400, output_tokens=150, cache_read_tokens=7), upstream="local")
        failed = town.budgets.reserve("polecat-2", "web", "scripted-standin", Estimate(tokens=10, usd=0.01))
        town.budgets.settle(failed, Usage(), status=529, outcome="error", error="overloaded")
        town.budgets.reserve("polecat-1", "web", "scripted-standin", Estimate(tokens=42, usd=0.125))  # in flight
        town.nudge(op, "polecat-1", "are you stuck?")
        town.estop(op, "drill [bold]not markup[/]")
    finally:
        town.close()
    return town_dir


FORMS = [
    ["bead", "ready"],
    ["bead", "ready", "--json"],
    ["bead", "ready", "-n", "3"],
    ["bead", "ready", "--limit=2", "--json"],
    ["bead", "ready", "-n1"],
    ["status"],
    ["status", "--json"],
    # as an agent: its role checked, its leases renewed (these hold no bead in progress), then the same read
    ["bead", "ready", "--as", "polecat-1", "--json"],
    ["bead", "ready", "--as=mayor"],
    ["status", "--as", "mayor", "--json"],
    ["status", "--as", "witness"],
    ["status", "--as", "operator"],
]


@pytest.mark.parametrize("argv", FORMS, ids=[" ".join(f) for f in FORMS])
def test_the_quick_path_prints_the_same_bytes_as_the_typer_command(town: Path, argv: list[str]) -> None:
    args = [*argv, "--town", str(town)]
    expected = typer_out(args)
    assert quick_out(args) == expected
    if "--json" in argv:
        assert json.loads(expected)  # real content, not two empty outputs


@pytest.mark.parametrize(
    "env",
    [{"COLUMNS": "44"}, {"FORCE_COLOR": "1"}, {"COLUMNS": "60", "FORCE_COLOR": "1"}],
    ids=["narrow", "colour", "narrow-colour"],
)
def test_both_paths_wrap_and_style_alike(town: Path, env: dict[str, str]) -> None:
    for argv in (["bead", "ready"], ["status"]):
        args = [*argv, "--town", str(town)]
        expected = typer_out(args, env)
        assert quick_out(args, env) == expected
    if "COLUMNS" in env:
        assert all(
            len(line) <= int(env["COLUMNS"])
            for line in typer_out(["bead", "ready", "--town", str(town)], env).decode().splitlines()
            if "\x1b" not in line
        )


def test_the_town_in_the_environment_is_the_same_as_town(town: Path) -> None:
    assert quick_out(["bead", "ready"], {"GASTOWN_TOWN": str(town)}) == typer_out(
        ["bead", "ready", "--town", str(town)]
    )


def test_the_status_shows_what_the_town_holds(town: Path) -> None:
    data = json.loads(quick_out(["status", "--json", "--town", str(town)]))
    assert data["town"] == "quickville"
    assert data["beads_by_status"]["done"] == 1 and data["beads_by_status"]["blocked"] == 1
    assert data["estop"]["reason"] == "drill [bold]not markup[/]"
    assert data["pending_nudges"] == 1
    assert {b["name"] for b in data["budgets"]} == {"town", "polecat-0", "web"}
    assert any(b["reserved_tokens"] == 42 for b in data["budgets"])
    assert [u["agent"] for u in data["usage"]] == ["polecat-0", "polecat-2"]
    assert data["model_errors"][0]["error"] == "overloaded"
    text = quick_out(["status", "--town", str(town)]).decode()
    assert "EMERGENCY STOP" in text and "[bold]not markup[/]" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["bead", "ready", "--help"],
        ["bead", "ready", "--as", "nobody"],
        ["bead", "ready", "--as", ""],
        ["status", "--as", "polecat-0"],  # a polecat may not see the town status: the command says so
        ["bead", "ready", "--limit", "0"],
        ["bead", "ready", "--limit", "501"],
        ["bead", "ready", "-n", "x"],
        ["bead", "ready", "-n", "²"],
        ["bead", "ready", "--bogus"],
        ["bead", "ready", "--json", "--json"],
        ["bead", "ready", "--json=1"],
        ["bead", "ready", "--limit"],
        ["bead", "ready", "extra"],
        ["status", "--limit", "3"],
        ["bead", "list"],
        ["--version"],
        [],
    ],
)
def test_anything_else_goes_to_the_typer_command(town: Path, argv: list[str]) -> None:
    done = _run(QUICK, [*argv, "--town", str(town)])
    assert done.returncode == 97, done.stdout
    assert done.stdout == b""


def test_acting_as_an_agent_renews_its_leases_on_both_paths(tmp_path: Path) -> None:
    town_dir = tmp_path / "town"
    subprocess.run([GASTOWN, "init", str(town_dir)], check=True, capture_output=True)
    town = open_town(load_settings(town_dir, env={"GASTOWN_LEASE__SECONDS": "0.001"}))
    try:
        polecat = town.agent_add(operator(), "polecat-0", "polecat").agent
        held = town.bead_create(operator(), "held, lease lapsed").id
        town.bead_claim(polecat, held)
    finally:
        town.close()
    copies = [tmp_path / "quick", tmp_path / "typer"]
    for copy in copies:
        shutil.copytree(town_dir, copy)
        subprocess.run([GASTOWN, "bead", "list", "--town", str(copy)], check=True, capture_output=True)  # records
    lapsed = typer_out(["bead", "ready", "--json", "--town", str(copies[1])])
    assert [b["id"] for b in json.loads(lapsed)] == [held]  # lapsed: listed again
    argv = ["bead", "ready", "--as", "polecat-0", "--json", "--town"]
    assert quick_out([*argv, str(copies[0])]) == typer_out([*argv, str(copies[1])]) == b"[]\n"
    for copy in copies:  # the call renewed the lease (600 s from town.toml) and recorded the agent as seen
        assert json.loads(quick_out(["bead", "ready", "--json", "--town", str(copy)])) == []
        shown = subprocess.run(
            [GASTOWN, "agent", "list", "--json", "--town", str(copy)], capture_output=True, text=True
        )
        assert [a["last_seen"] is not None for a in json.loads(shown.stdout)] == [True], shown.stderr


def test_a_wrong_limit_gets_the_commands_own_error(town: Path) -> None:
    done = subprocess.run([GASTOWN, "bead", "ready", "-n", "0", "--town", str(town)], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.startswith("error: limit must be between 1 and 500")


def test_changed_settings_go_the_full_way_once_then_quick_again(tmp_path: Path) -> None:
    town_dir = tmp_path / "town"
    subprocess.run([GASTOWN, "init", str(town_dir), "--name", "before"], check=True, capture_output=True)
    assert b"town before" in quick_out(["status", "--town", str(town_dir)])
    toml = town_dir / "town.toml"
    toml.write_text(toml.read_text().replace('name = "before"', 'name = "after"'))
    assert _run(QUICK, ["status", "--town", str(town_dir)]).returncode == 97  # not checked yet
    assert b"town after" in subprocess.run([GASTOWN, "status", "--town", str(town_dir)], capture_output=True).stdout
    assert b"town after" in quick_out(["status", "--town", str(town_dir)])
    # an environment override is part of the settings too
    env = {"GASTOWN_TOWN__NAME": "from-env"}
    assert _run(QUICK, ["status", "--town", str(town_dir)], env).returncode == 97
    subprocess.run(
        [GASTOWN, "status", "--town", str(town_dir)], check=True, capture_output=True, env={**os.environ, **env}
    )
    assert b"town from-env" in quick_out(["status", "--town", str(town_dir)], env)
    # bad settings: the full command reports them, the quick path never takes the town
    toml.write_text(toml.read_text().replace('name = "after"', "name = 3"))
    assert _run(QUICK, ["status", "--town", str(town_dir)]).returncode == 97
    done = subprocess.run([GASTOWN, "status", "--town", str(town_dir)], capture_output=True, text=True)
    assert done.returncode != 0 and "bad settings" in done.stderr


def test_a_copied_town_reads_its_own_database(town: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(town, copy)
    subprocess.run(
        [GASTOWN, "bead", "create", "only in the copy", "--town", str(copy)], check=True, capture_output=True
    )
    assert b"only in the copy" not in quick_out(["bead", "ready", "-n", "500", "--town", str(town)])
    assert b"only in the copy" in quick_out(["bead", "ready", "-n", "500", "--town", str(copy)])


def test_a_lost_database_is_reported_by_the_command(tmp_path: Path) -> None:
    town_dir = tmp_path / "town"
    subprocess.run([GASTOWN, "init", str(town_dir)], check=True, capture_output=True)
    (town_dir / "town.db").unlink()
    assert _run(QUICK, ["bead", "ready", "--town", str(town_dir)]).returncode == 97
    done = subprocess.run([GASTOWN, "bead", "ready", "--town", str(town_dir)], capture_output=True, text=True)
    assert done.returncode != 0 and "missing" in done.stderr and "restore" in done.stderr


def test_the_options_parse_as_click_parses_them() -> None:
    known = {"--limit", "-n", "--town", "--json"}
    assert quick.parse(["-n", "5", "--town=/x", "--json"], known) == {"--limit": "5", "--town": "/x", "--json": ""}
    assert quick.parse(["-n7"], known) == {"--limit": "7"}
    assert quick.parse(["--limit", "3", "-n", "4"], known) is None  # given twice
    assert quick.parse(["--town", "--json"], known) is None  # an option where a value belongs
    assert quick.parse(["--", "x"], known) is None


def test_the_quick_path_allows_the_limits_the_guard_allows() -> None:
    assert guard.limit(quick.LIMIT_MAX) == quick.LIMIT_MAX
    with pytest.raises(InvalidInput):
        guard.limit(quick.LIMIT_MAX + 1)
    assert guard.OPERATOR == quick.OPERATOR


def test_the_roles_table_names_every_role_by_its_value() -> None:
    assert set(roles.ACTIONS) == {r.value for r in Role}
    assert all(roles.can(r, "bead.read") == roles.can(r.value, "bead.read") for r in Role)


def test_the_quick_reads_know_the_same_alive_states_as_the_models() -> None:
    assert {s.value for s in ALIVE_STATES} == store_glance.ALIVE
