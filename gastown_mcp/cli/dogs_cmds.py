"""`gastown backup|restore|estop|thaw` and the health table of `gastown doctor`.

`restore` runs with the town stopped; `estop`/`thaw` act on a running town when there is one (its containers
pause or resume at once) and otherwise just set the switch the town process obeys when it starts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gastown_mcp import assemble
from gastown_mcp.cli._edge import Json, TownDir, attached_town, emit, find_town_dir, open_town, print_json
from gastown_mcp.config import load_settings
from gastown_mcp.errors import Conflict, GastownError, RuntimeUnavailable
from gastown_mcp.runstate import read_state
from gastown_mcp.supervisor.dogs import Finding, Kennel
from gastown_mcp.town import Town, operator

STATE_STYLE = {"green": "[green]green[/]", "yellow": "[yellow]yellow[/]", "red": "[red]RED[/]"}


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
    app.command("estop")(estop)
    app.command("thaw")(thaw)


def _town(town_dir: Path | None) -> AbstractContextManager[Town]:
    """The running town's process-side view (with its runtime) when one runs here, else the database alone."""
    settings = load_settings(find_town_dir(town_dir))
    if read_state(settings) is not None:
        try:
            return attached_town(town_dir)
        except GastownError:
            pass
    return open_town(town_dir)


def backup(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Back the town database up now (online), verified, into backups/ (older ones pruned)."""
    with open_town(town_dir) as town:
        info = town.backup_now(operator())
    emit(
        as_json,
        info,
        lambda c: c.print(f"backup {info.path} at sequence {info.seq}: verified, {info.bytes} bytes, {info.seconds}s"),
    )


def restore(
    backup_path: Annotated[
        Path | None, typer.Argument(metavar="[BACKUP]", help="A backup file (default: the newest verified one).")
    ] = None,
    without_journal: Annotated[
        bool,
        typer.Option(
            "--without-journal",
            help="Restore BACKUP as it was, replaying nothing: every write after it is lost (for a backup the "
            "journal no longer reaches).",
        ),
    ] = False,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Rebuild town.db from a verified backup plus the journal after it; the damaged file is moved aside."""
    settings = load_settings(find_town_dir(town_dir))
    if read_state(settings) is not None:
        raise Conflict("the town is running: stop it with `gastown down` before restoring its database")
    report = assemble.restore_town(settings, backup_path, journal=not without_journal)

    def render(c: Console) -> None:
        src = report["backup"] or "an empty database (the journal holds the whole history)"
        c.print(f"restored {settings.db_path} from {src}", soft_wrap=True, highlight=False)
        c.print(
            f"replayed {report['replayed']} journal records: now at sequence {report['seq']} ({report['seconds']}s)"
        )
        for aside in report["moved_aside"]:
            c.print(f"the damaged file is kept as {aside}", soft_wrap=True, highlight=False)

    emit(as_json, report, render)


def estop(
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded with who stopped the town.")] = "",
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Emergency stop: pause every agent container, refuse model calls, stop dispatching. `gastown thaw` resumes."""
    with _town(town_dir) as town:
        stop = town.estop(operator(), reason)
        paused = town.paused_containers(operator())
    out = {**stop, "paused": paused}
    emit(as_json, out, lambda c: c.print(f"town stopped by {stop['by']}: {stop['reason']} (paused: {paused})"))


def thaw(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Lift the emergency stop: containers resume, leases restart, dispatch goes on."""
    with _town(town_dir) as town:
        lifted = town.thaw(operator())
    emit(as_json, {"lifted": lifted}, lambda c: c.print("thawed" if lifted else "the town was not stopped"))


def run_doctor(town_dir: Path | None, fix: bool, as_json: bool, engine: Any) -> None:
    """Every dog once (full integrity check); a table of check, state and what to do; non-zero exit on red."""
    findings: list[Finding] = []
    try:
        findings.append(Finding("docker", "green", engine()))
    except RuntimeUnavailable as exc:
        findings.append(Finding("docker", "red", str(exc), "start the Docker engine"))
    try:
        with _town(town_dir) as town:
            findings += Kennel(town, doctor=True, fix=fix).run()
    except GastownError as exc:
        findings.append(Finding("database", "red", str(exc), "run the command above"))
    red = [f for f in findings if f.state == "red" and not f.fixed]
    if as_json:
        print_json(findings)
    else:
        table = Table("check", "state", "detail", "what to do / done")
        for f in findings:
            table.add_row(f.check, STATE_STYLE.get(f.state, f.state), f.detail, f.fixed or f.todo)
        Console().print(table)
    if red:
        raise typer.Exit(1)
