"""The quick path of `gastown bead ready` and `gastown status` as the operator: parsed, read and printed with
the standard library alone (no typer, click, rich or pydantic), through the read-only `town.glance`.

`run(argv)` takes exactly the forms these commands accept (`--limit/-n N`, `--town DIR` or $GASTOWN_TOWN,
`--json`, each at most once) and prints what the typer command prints for them (the same `plain` text, the
same JSON). Anything else gives way, having printed nothing, to the typer app, which parses and reports as
always: `--help`, `--as` (acting as an agent renews its leases: a write), a bad or out-of-range value, an
unknown option, no town, a town whose settings were not yet read by a full command, any error opening the
database. Settings are the one thing this path cannot check without pydantic, so it trusts only what a full
command recorded after loading them (`remember`): the town's name and prefix, under a key of where the town
is, town.toml's text, the GASTOWN_<SECTION>__<FIELD> variables and the gastown version and source that check
them (`settings_key`). Any change there sends the next command the full way, which checks the settings and
records them again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import gastown_mcp

STAMP = "run/cli-settings.json"
TOWN_FILE = "town.toml"  # config.TOWN_FILE (config loads pydantic)
_FLAGS = {"bead ready": {"--limit", "-n", "--town", "--json"}, "status": {"--town", "--json"}}


def run(argv: list[str]) -> bool:
    """Run `argv` on the quick path; False (having printed nothing) when the typer app should run it."""
    command = "bead ready" if argv[:2] == ["bead", "ready"] else "status" if argv[:1] == ["status"] else None
    if command is None:
        return False
    options = parse(argv[len(command.split()) :], _FLAGS[command])
    if options is None:
        return False
    limit = 20
    if "--limit" in options:
        value = options["--limit"]
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 500:
            return False  # the command says what is wrong with it
        limit = int(value)
    town = options.get("--town") or os.environ.get("GASTOWN_TOWN") or None
    settings = recalled(Path(town) if town else None)
    if settings is None:
        return False
    from gastown_mcp.town.glance import Glance

    try:
        glance = Glance(settings["name"], settings["prefix"], Path(settings["db"]), Path(settings["journal"]))
    except Exception:
        return False  # the command reports it, the same way as always
    try:
        data: Any = glance.ready(limit) if command == "bead ready" else glance.status()
    except Exception:
        return False
    finally:
        glance.close()
    from gastown_mcp.cli import plain

    if "--json" in options:
        plain.write(json.dumps(data, indent=2) + "\n")
    elif command == "bead ready":
        plain.write(plain.bead_table(data, plain.Out.of(sys.stdout)))
    else:
        plain.write(plain.status_text(data, plain.Out.of(sys.stdout)))
    return True


def parse(args: list[str], known: set[str]) -> dict[str, str] | None:
    """The options in `args` (each of `known` at most once; `-n` is `--limit`), or None for anything else."""
    found: dict[str, str] = {}
    rest = list(args)
    while rest:
        head = rest.pop(0)
        name, eq, value = head.partition("=") if head.startswith("--") else (head, "", "")
        if head.startswith("-n") and head != "-n" and "-n" in known:  # -n5
            name, eq, value = "-n", "=", head[2:]
        if name not in known:
            return None
        name = "--limit" if name == "-n" else name
        if name in found:
            return None
        if name == "--json":
            if eq:
                return None
            found[name] = ""
            continue
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if not value or value.startswith("-"):
            return None
        found[name] = value
    return found


def town_dir(town: Path | None) -> Path | None:
    """The town directory (`--town`/$GASTOWN_TOWN, else the current directory) if it holds town.toml."""
    candidate = (town or Path.cwd()).expanduser()
    return candidate.resolve() if (candidate / TOWN_FILE).is_file() else None


def settings_key(town: Path) -> dict[str, str]:
    """What the settings a town's commands load depend on: where the town is, town.toml's bytes, the
    GASTOWN_<SECTION>__<FIELD> variables, and the gastown version and source (config, models) that check them."""
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("GASTOWN_") and "__" in k)
    env_key = ""
    if env:  # hashed, so no value of theirs is written down (hashlib loads only then)
        import hashlib

        env_key = hashlib.sha256(json.dumps(env).encode()).hexdigest()
    source = [Path(gastown_mcp.__file__).with_name(name).stat() for name in ("config.py", "models.py")]
    return {
        "gastown": gastown_mcp.__version__,
        "town_dir": str(town),  # a town copied elsewhere reads its own database, never the original's
        "source": " ".join(f"{s.st_size}:{s.st_mtime_ns}" for s in source),
        "toml": (town / TOWN_FILE).read_text(errors="replace"),  # the file itself: compared, not hashed
        "env": env_key,
    }


def recalled(town: Path | None) -> dict[str, str] | None:
    """The town's name, prefix, database and journal as a full command recorded them, if still current."""
    found = town_dir(town)
    if found is None:
        return None
    try:
        stamp = json.loads((found / STAMP).read_text())
        current = settings_key(found)
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("key") != current:
        return None
    settings = stamp.get("settings")
    fields = ("name", "prefix", "db", "journal")
    if not isinstance(settings, dict) or not all(isinstance(settings.get(f), str) for f in fields):
        return None
    return {f: settings[f] for f in fields}


def remember(town: Path, key: dict[str, str], name: str, prefix: str, db: Path, journal: Path) -> None:
    """Record the settings a full command loaded under `key` (taken before loading), for the quick path; a
    town directory that cannot be written just keeps the full path."""
    path = town / STAMP
    record = {"key": key, "settings": {"name": name, "prefix": prefix, "db": str(db), "journal": str(journal)}}
    try:
        if path.is_file() and json.loads(path.read_text()) == record:
            return
    except (OSError, ValueError):
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
