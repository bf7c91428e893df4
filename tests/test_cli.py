"""The `gastown` command line, driven through typer's CliRunner against a real town on disk."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner, Result

from gastown_mcp.cli import build_app
from gastown_mcp.cli.town_cmds import follow_events
from gastown_mcp.config import JOURNAL_FILE, load_settings
from gastown_mcp.follow import journal_changes
from gastown_mcp.models import Event, Verb
from gastown_mcp.store import Store
from gastown_mcp.store import backup as backup_module
from gastown_mcp.town import Town


@pytest.fixture
def run() -> Any:
    runner = CliRunner()
    app = build_app()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env={"GASTOWN_TOWN": "", "COLUMNS": "200", **(env or {})})

    return invoke


@pytest.fixture
def town_dir(tmp_path: Path, run: Any) -> Path:
    path = tmp_path / "town"
    result = run("init", str(path), "--name", "testville", "--prefix", "tv")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def gt(run: Any, town_dir: Path) -> Any:
    """Run a command in the test town and expect success; returns the result."""

    def invoke(*args: str, ok: bool = True) -> Result:
        result = run(*args, "--town", str(town_dir))
        if ok:
            assert result.exit_code == 0, f"{args}: {result.stdout}{result.stderr}"
        return result

    return invoke


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def assert_one_error_line(result: Result, code: int, contains: str) -> None:
    assert result.exit_code == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert contains in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


# -- init and finding the town --------------------------------------------------------------------


def test_init_writes_town_toml_and_a_migrated_database(town_dir: Path) -> None:
    settings = load_settings(town_dir)
    assert settings.town.name == "testville"
    assert settings.town.prefix == "tv"
    assert settings.db_path.exists()


def test_commands_in_a_town_directory_need_no_town_option(
    run: Any, town_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(town_dir)
    created = as_json(run("bead", "create", "found it", "--json"))
    assert created["id"].startswith("tv-")


def test_gastown_town_variable_names_the_town(run: Any, town_dir: Path) -> None:
    result = run("bead", "create", "via env", "--json", env={"GASTOWN_TOWN": str(town_dir)})
    assert result.exit_code == 0, result.stderr
    assert as_json(result)["title"] == "via env"


def test_init_refuses_a_directory_that_is_already_a_town(run: Any, town_dir: Path) -> None:
    assert_one_error_line(run("init", str(town_dir)), 4, "already a town")


def test_init_refuses_a_bad_prefix_without_writing_anything(run: Any, tmp_path: Path) -> None:
    assert_one_error_line(run("init", str(tmp_path / "t"), "--prefix", "Bad!"), 2, "prefix")
    assert not (tmp_path / "t" / "town.toml").exists()


def test_a_command_outside_any_town_says_how_to_make_one(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_error_line(run("bead", "list"), 3, "no town here: run `gastown init` or pass --town")


# -- beads ----------------------------------------------------------------------------------------


def test_a_bead_goes_from_create_through_claim_to_done(gt: Any) -> None:
    gt("agent", "add", "pc-1", "--role", "polecat")
    created = as_json(
        gt("bead", "create", "Write the parser", "-p", "1", "-l", "core", "--acceptance", "tests", "--json")
    )
    bead_id = created["id"]
    assert created["priority"] == 1 and created["labels"] == ["core"]

    listed = gt("bead", "list")
    assert bead_id in listed.stdout and "Write the parser" in listed.stdout
    assert [b["id"] for b in as_json(gt("bead", "ready", "--json"))] == [bead_id]

    claimed = as_json(gt("bead", "claim", "--as", "pc-1", "--json"))
    assert claimed["id"] == bead_id and claimed["assignee"] == "pc-1" and claimed["status"] == "in_progress"
    gt("bead", "comment", bead_id, "halfway", "--as", "pc-1")
    gt("bead", "complete", bead_id, "--summary", "parser written", "--branch", "polecat/pc-1/x", "--as", "pc-1")

    shown = as_json(gt("bead", "show", bead_id, "--json"))
    assert shown["status"] == "done"
    assert shown["result"]["summary"] == "parser written"
    assert shown["comments"][0]["body"] == "halfway"
    human = gt("bead", "show", bead_id).stdout
    assert "parser written" in human and "halfway" in human
    assert as_json(gt("bead", "list", "--status", "done", "--json"))[0]["id"] == bead_id


def test_update_link_and_release_change_the_bead(gt: Any) -> None:
    first = as_json(gt("bead", "create", "first", "--json"))["id"]
    second = as_json(gt("bead", "create", "second", "--json"))["id"]
    gt("bead", "link", second, first)
    assert as_json(gt("bead", "show", second, "--json"))["blocked_by"] == [first]
    assert [b["id"] for b in as_json(gt("bead", "ready", "--json"))] == [first]

    updated = as_json(gt("bead", "update", first, "--title", "first, renamed", "-l", "a", "-l", "b", "--json"))
    assert updated["title"] == "first, renamed" and updated["labels"] == ["a", "b"]
    gt("bead", "claim", first)
    released = as_json(gt("bead", "release", first, "--reason", "not now", "--json"))
    assert released["status"] == "open" and released["assignee"] is None


def test_an_unknown_bead_is_one_line_on_stderr(gt: Any) -> None:
    assert_one_error_line(gt("bead", "show", "tv-nope", ok=False), 3, "tv-nope")


def test_a_priority_out_of_range_is_one_line_on_stderr(gt: Any) -> None:
    assert_one_error_line(gt("bead", "create", "x", "--priority", "9", ok=False), 2, "priority")


def test_a_priority_that_is_not_a_number_is_one_usage_line_naming_the_help(gt: Any) -> None:
    result = gt("bead", "create", "x", "-p", "abc", ok=False)
    assert_one_error_line(result, 2, "'--priority' / '-p'")
    assert "`gastown bead create --help`" in result.stderr


def test_a_missing_argument_and_an_unknown_command_are_one_line_each(run: Any) -> None:
    assert_one_error_line(run("bead", "create"), 2, "Missing argument 'title'")
    assert_one_error_line(run("nosuch"), 2, "No such command 'nosuch'")


def test_version_prints_the_package_version(run: Any) -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"gastown {version('gastown_mcp')}"


def test_every_command_takes_json_and_town_as_the_readme_says() -> None:
    exempt = {("image", "build"): {"--town"}}  # there --town means "also build the town image"
    missing = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        for name in command.list_commands(None) if hasattr(command, "commands") else []:
            walk(command.get_command(None, name), (*path, name))  # the root loads each command's module here
        if not hasattr(command, "commands"):
            options = {o for p in command.params for o in getattr(p, "opts", [])}
            lacking = {"--json", "--town"} - options - exempt.get(path, set())
            missing.extend(f"{' '.join(path)} {o}" for o in sorted(lacking))

    walk(typer.main.get_command(build_app()), ())
    assert missing == []


def test_a_description_is_read_from_a_file_or_standard_input(gt: Any, run: Any, town_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.md"
    spec.write_text("Line one.\nLine two with `code`.\n")
    from_file = as_json(gt("bead", "create", "From a file", "-d", f"@{spec}", "--json"))
    assert from_file["description"] == "Line one.\nLine two with `code`.\n"
    piped = run("bead", "create", "From stdin", "-d", "-", "--json", "--town", str(town_dir))
    assert piped.exit_code == 0, piped.stderr
    bead = json.loads(piped.stdout)
    assert bead["description"] == ""  # CliRunner's stdin is empty here
    updated = CliRunner().invoke(
        build_app(), ["bead", "update", bead["id"], "-d", "-", "--json", "--town", str(town_dir)], input="piped text"
    )
    assert json.loads(updated.stdout)["description"] == "piped text"
    literal = as_json(gt("bead", "create", "Literal", "-d", "@@handle", "--json"))
    assert literal["description"] == "@handle"
    assert_one_error_line(gt("bead", "create", "x", "-d", "@/no/such/file", ok=False), 3, "no file /no/such/file")


def test_usage_of_an_unknown_agent_is_not_found(gt: Any) -> None:
    assert_one_error_line(gt("usage", "ghost", ok=False), 3, "ghost")


def test_adding_a_rig_from_a_path_that_does_not_exist_exits_3_like_other_missing_things(gt: Any) -> None:
    assert_one_error_line(gt("rig", "add", "web", "/no/such/repo", ok=False), 3, "no repository at /no/such/repo")


def test_sling_names_its_second_argument_to_as_the_mcp_tool_does(run: Any) -> None:
    assert "TO" in run("sling", "--help").stdout


def test_an_agent_acting_with_as_gets_its_role_refusal(gt: Any) -> None:
    gt("agent", "add", "pc-1", "--role", "polecat")
    bead_id = as_json(gt("bead", "create", "guarded", "--json"))["id"]
    assert_one_error_line(gt("bead", "link", bead_id, bead_id, "--as", "pc-1", ok=False), 5, "pc-1")


def test_acting_as_an_unknown_agent_is_refused(gt: Any) -> None:
    assert_one_error_line(gt("bead", "list", "--as", "ghost", ok=False), 3, "ghost")


# -- agents ---------------------------------------------------------------------------------------


def test_agent_add_prints_the_secrets_once_and_agent_list_never_shows_them(gt: Any, town_dir: Path) -> None:
    added = as_json(gt("agent", "add", "mayor", "--role", "mayor", "--json"))
    token, key = added["token"], added["gateway_key"]
    human = gt("agent", "add", "pc-1", "--role", "polecat", "--rig", "rig-a").stdout
    assert "will not be shown again" in human
    assert "claude mcp add --transport http" in human and "Authorization: Bearer gt_" in human

    for listing in (gt("agent", "list").stdout, gt("agent", "list", "--json").stdout):
        assert "mayor" in listing and "pc-1" in listing
        assert token not in listing and key not in listing and "gt_" not in listing

    settings = load_settings(town_dir)
    store = Store(settings)
    try:
        assert Town(store, settings).authenticate(token).name == "mayor"
    finally:
        store.close()


def test_agent_token_rotates_the_secrets(gt: Any, town_dir: Path) -> None:
    old = as_json(gt("agent", "add", "pc-1", "--role", "polecat", "--json"))["token"]
    new = as_json(gt("agent", "token", "pc-1", "--json"))["token"]
    assert new != old
    settings = load_settings(town_dir)
    store = Store(settings)
    try:
        town = Town(store, settings)
        assert town.authenticate(new).name == "pc-1"
        with pytest.raises(Exception, match="unknown or revoked"):
            town.authenticate(old)
    finally:
        store.close()


def test_agent_remove_hides_the_agent_from_the_list(gt: Any) -> None:
    gt("agent", "add", "pc-1", "--role", "polecat")
    gt("agent", "remove", "pc-1")
    assert as_json(gt("agent", "list", "--json")) == []


def test_adding_an_agent_with_an_unknown_role_is_one_line(gt: Any) -> None:
    assert_one_error_line(gt("agent", "add", "x", "--role", "king", ok=False), 2, "role")


# -- status, feed, export -------------------------------------------------------------------------


def test_status_counts_beads_and_agents(gt: Any) -> None:
    gt("agent", "add", "pc-1", "--role", "polecat")
    gt("bead", "create", "one")
    gt("bead", "create", "two")
    status = as_json(gt("status", "--json"))
    assert status["beads_by_status"] == {"open": 2}
    assert status["ready"] == 2
    assert status["agents_by_role"] == {"polecat": 1}
    human = gt("status").stdout
    assert "testville" in human and "polecat" in human


def test_feed_without_follow_prints_past_events(gt: Any) -> None:
    first = as_json(gt("bead", "create", "first", "--json"))["id"]
    gt("bead", "create", "second")
    human = gt("feed", "--no-follow").stdout
    assert Verb.bead_created in human and first in human

    lines = [json.loads(line) for line in gt("feed", "--json", "--bead", first).stdout.splitlines()]
    assert lines and all(e["bead_id"] == first for e in lines)
    after_first = gt("feed", "--json", "--since", str(lines[-1]["id"])).stdout.splitlines()
    assert [json.loads(line)["verb"] for line in after_first] == [Verb.bead_created]


def test_following_the_feed_wakes_on_the_journal_not_a_timer(town_dir: Path) -> None:
    settings = load_settings(town_dir)
    store = Store(settings)
    town = Town(store, settings)
    seen: list[Event] = []
    stop = threading.Event()
    # A heartbeat far longer than the test: only the file watch can wake the follower in time.
    changes = journal_changes(settings.journal_path, heartbeat_s=600, stop=stop)

    def show(event: Event) -> None:
        seen.append(event)
        stop.set()

    follower = threading.Thread(
        target=follow_events, args=(store.events.since, store.events.last_id(), None, None, show, changes)
    )
    follower.start()
    try:
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            town.bead_create(town.agent("operator"), "arrives while following")
            stop.wait(1.0)
    finally:
        stop.set()
        follower.join(30)
        store.close()
    assert not follower.is_alive()
    assert seen and seen[0].verb == Verb.bead_created


def test_export_writes_a_jsonl_line_for_each_table(gt: Any, tmp_path: Path) -> None:
    first = as_json(gt("bead", "create", "first", "-l", "core", "--json"))["id"]
    gt("bead", "create", "second", "--blocked-by", first)
    gt("bead", "comment", first, "a note")
    out = tmp_path / "town.jsonl"
    result = gt("export", "--out", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    tables = {r["table"] for r in records}
    assert tables == {"beads", "labels", "deps", "comments", "events"}
    assert sum(r["table"] == "beads" for r in records) == 2
    assert "2 beads" in result.stderr and result.stdout == ""

    to_stdout = gt("export", "--json")
    assert len(to_stdout.stdout.splitlines()) == len(records)
    assert json.loads(to_stdout.stderr)["beads"] == 2


# -- messages -------------------------------------------------------------------------------------


def test_nudges_are_listed_with_their_delivery_state(gt: Any) -> None:
    gt("agent", "add", "pc-1", "--role", "polecat")
    gt("nudge", "pc-1", "pick up the next bead")
    assert [n["state"] for n in as_json(gt("nudge", "--list", "--json"))] == ["sent"]
    gt("inbox", "--as", "pc-1")
    listed = gt("nudge", "--list", "--agent", "pc-1")
    assert "delivered" in listed.stdout and "pick up the next bead" in listed.stdout


def test_listing_nudges_as_an_agent_is_a_usage_error(gt: Any) -> None:
    result = gt("nudge", "--list", "--as", "pc-1", ok=False)
    assert result.exit_code == 2 and "operator" in result.stderr


def test_nudging_without_text_is_a_usage_error(gt: Any) -> None:
    result = gt("nudge", "pc-1", ok=False)
    assert_one_error_line(result, 2, "pass AGENT and TEXT")


def test_mail_reaches_the_inbox_and_can_be_acknowledged(gt: Any) -> None:
    gt("agent", "add", "pc-1", "--role", "polecat")
    sent = as_json(gt("mail", "send", "pc-1", "--subject", "hello", "--body", "welcome", "--json"))
    inbox = as_json(gt("inbox", "--as", "pc-1", "--json"))
    assert [(m["subject"], m["body"]) for m in inbox] == [("hello", "welcome")]
    gt("mail", "ack", str(sent["id"]), "--as", "pc-1")
    assert as_json(gt("inbox", "--as", "pc-1", "--json")) == []
    assert len(as_json(gt("inbox", "--as", "pc-1", "--all", "--json"))) == 1


def test_agents_can_mail_the_operator(gt: Any) -> None:
    gt("agent", "add", "pc-1", "--role", "polecat")
    gt("mail", "send", "operator", "--body", "stuck on tv-1", "--as", "pc-1")
    assert "stuck on tv-1" in gt("inbox").stdout


# -- serve and the installed script ---------------------------------------------------------------


def test_serving_over_stdio_needs_an_agent(gt: Any) -> None:
    result = gt("serve", ok=False)
    assert result.exit_code == 2 and "--as" in result.stderr


def test_serving_over_http_refuses_a_fixed_agent(gt: Any) -> None:
    result = gt("serve", "--http", "--as", "mayor", ok=False)
    assert result.exit_code == 2 and "bearer token" in result.stderr


def test_the_installed_script_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "gastown"
    if not script.exists():
        pytest.skip("the gastown console script is not installed in this environment")
    done = subprocess.run(
        [str(script), "bead", "list", "--town", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 3
    assert done.stderr.strip() == f"error: no town here at {tmp_path}: run `gastown init` or pass --town"


# -- durability: refuse a lost database, backup, restore, doctor, estop ----------------------------------------
def test_status_of_a_town_whose_database_was_deleted_fails_and_names_the_restore_command(
    gt: Any, town_dir: Path
) -> None:
    (town_dir / "town.db").unlink()
    result = gt("status", ok=False)
    assert result.exit_code != 0
    assert f"gastown restore --town {town_dir}" in " ".join(result.stderr.split())
    assert not (town_dir / "town.db").exists()


def test_a_zero_length_database_is_refused_by_status(gt: Any, town_dir: Path) -> None:
    (town_dir / "town.db").write_bytes(b"")
    result = gt("status", ok=False)
    assert result.exit_code != 0 and "empty" in result.stderr


def test_backup_then_restore_brings_back_every_bead(gt: Any, town_dir: Path) -> None:
    gt("bead", "create", "first", "--description", "kept in the backup")
    assert "verified" in gt("backup").stdout
    gt("bead", "create", "second", "--description", "only in the journal")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{town_dir / 'town.db'}{suffix}").unlink(missing_ok=True)
    restored = json.loads(gt("restore", "--json").stdout)
    assert restored["replayed"] >= 1
    titles = {b["title"] for b in json.loads(gt("bead", "list", "--json").stdout)}
    assert titles == {"first", "second"}


def test_a_journal_past_its_bound_is_backed_up_and_dropped_and_an_older_backup_restores_only_as_it_was(
    gt: Any, town_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gt("bead", "create", "first")
    first = json.loads(gt("backup", "--json").stdout)["path"]
    with (town_dir / "town.toml").open("a") as toml:
        toml.write("\n[dogs]\njournal_max_mb = 0.02\n")  # 20 KiB
    for i in range(3):
        gt("bead", "create", f"big {i}", "--description", "x" * 10_000)
    journal = town_dir / JOURNAL_FILE
    assert journal.stat().st_size > 20 * 1024
    found = {f["check"]: f for f in json.loads(gt("doctor", "--json").stdout)}
    assert found["backup"]["state"] == "yellow" and "past [dogs] journal_max_mb" in found["backup"]["detail"]
    fixed = {f["check"]: f for f in json.loads(gt("doctor", "--fix", "--json").stdout)}
    assert "past [dogs] journal_max_mb" in fixed["backup"]["fixed"]
    assert journal.stat().st_size < 20 * 1024
    gt("bead", "create", "after")

    def titles() -> set[str]:
        return {b["title"] for b in json.loads(gt("bead", "list", "--json").stdout)}

    everything = {"first", "big 0", "big 1", "big 2", "after"}
    assert titles() == everything
    (town_dir / "town.db").unlink()
    gt("restore")  # the newest backup and the journal after it: every write
    assert titles() == everything
    refused = gt("restore", first, ok=False)  # the journal no longer reaches back to the older one
    assert refused.exit_code != 0 and "--without-journal" in " ".join(refused.stderr.split())
    back = json.loads(gt("restore", first, "--without-journal", "--json").stdout)
    assert titles() == {"first"} and back["replayed"] == 0
    aside = [Path(p).name for p in back["moved_aside"]]  # the writes given up, kept, never replayed onto this
    assert any(n.startswith(f"{JOURNAL_FILE}.after-") for n in aside) and any(n.startswith("after-") for n in aside)
    clock = SimpleNamespace(**{n: getattr(time, n) for n in ("monotonic", "time", "gmtime")})
    clock.strftime = lambda fmt, t=None: back["moved_aside"][0].rsplit("damaged-", 1)[1]  # the same second
    monkeypatch.setattr(backup_module, "time", clock)
    again = json.loads(gt("restore", first, "--without-journal", "--json").stdout)
    monkeypatch.undo()
    assert len(set(back["moved_aside"] + again["moved_aside"])) == len(back["moved_aside"] + again["moved_aside"])
    assert len(list(town_dir.glob(f"{JOURNAL_FILE}.after-*"))) == 2  # both kept, neither overwritten
    assert len(list(town_dir.glob("town.db.damaged-*[0-9]"))) == 2  # and both databases it replaced
    gt("bead", "create", "went on from the older backup")
    (town_dir / "town.db").unlink()
    gt("restore")
    assert titles() == {"first", "went on from the older backup"}


def test_doctor_prints_a_table_and_fails_on_a_missing_database(gt: Any, town_dir: Path) -> None:
    healthy = json.loads(gt("doctor", "--json").stdout)
    assert {f["check"] for f in healthy} >= {"integrity", "journal", "backup", "disk", "docker"}
    (town_dir / "town.db").unlink()
    assert gt("doctor", ok=False).exit_code == 1  # the table
    result = gt("doctor", "--json", ok=False)
    red = {f["check"]: f for f in json.loads(result.stdout) if f["state"] == "red"}
    assert result.exit_code == 1 and "gastown restore --town" in red["database"]["detail"]


def test_doctor_fix_takes_the_missing_backup_and_says_so(gt: Any) -> None:
    gt("bead", "create", "x")
    fixed = {f["check"]: f for f in json.loads(gt("doctor", "--fix", "--json").stdout)}
    assert fixed["backup"]["fixed"] == "backed up"


def test_estop_shows_in_status_and_thaw_lifts_it(gt: Any) -> None:
    gt("estop", "--reason", "smoke test")
    assert "smoke test" in gt("status", "--json").stdout
    assert "EMERGENCY STOP" in gt("status").stdout
    gt("thaw")
    assert "EMERGENCY STOP" not in gt("status").stdout


def test_agent_logs_render_claude_codes_stream_json_as_readable_lines() -> None:
    from gastown_mcp.cli._logs import render_log

    stream = [
        {"type": "system", "subtype": "init", "session_id": "s-1", "model": "scripted-standin",
         "mcp_servers": [{"name": "gastown", "status": "connected"}]},
        {"type": "assistant", "message": {"content": [
            {"type": "text", "text": "Claiming the bead."},
            {"type": "tool_use", "name": "mcp__gastown__bead_claim", "input": {"id": "gt-1"}}]}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "is_error": True, "content": [{"type": "text", "text": "claimed by nux"}]}]}},
        {"type": "result", "subtype": "success", "is_error": False, "num_turns": 3, "total_cost_usd": 0.0125,
         "result": "Done."},
    ]  # fmt: skip
    text = "gastown: a plain line\n" + "\n".join(json.dumps(e) for e in stream)
    assert list(render_log(text)) == [
        "gastown: a plain line",
        "session s-1: model scripted-standin; MCP: gastown connected",
        "assistant: Claiming the bead.",
        '→ mcp__gastown__bead_claim {"id": "gt-1"}',
        "← error: claimed by nux",
        "result: success after 3 turns, $0.0125: Done.",
    ]
