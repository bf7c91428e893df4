"""The quick path of `gastown bead ready` and `gastown status`: parsed, read and printed with
the standard library alone (no typer, click, rich or pydantic), through the narrow `town.glance`.

`run(argv)` takes exactly the forms these commands accept (`--limit/-n N`, `--as NAME`, `--town DIR` or
$GASTOWN_TOWN, `--json`, each at most once) and prints what the typer command prints for them (the same
`plain` text, the same JSON); as an agent it first does what `Town` does for any call by one (checks the role,
renews the agent's leases). Anything else gives way, having printed nothing, to the typer app, which parses
and reports as always: `--help`, a bad or out-of-range value, an unknown option, an unknown agent or one not
allowed the command, no town, a town whose settings were not yet read by a full command, any error opening
the database. Settings are the one thing this path cannot check without pydantic, so it trusts only what a full
command recorded after loading them (`remember`: name, prefix, lease, journal durability), under a key of where the town
is, town.toml's text, the GASTOWN_<SECTION>__<FIELD> variables and the gastown version and source that check
them (`settings_key`). Any change there sends the next command the full way, which checks the settings and
records them again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gastown_mcp

if TYPE_CHECKING:
    from gastown_mcp.config import Settings
    from gastown_mcp.town.glance import Glance

STAMP = "run/cli-settings.json"
TOWN_FILE = "town.toml"  # config.TOWN_FILE (config loads pydantic)
_FLAGS = {"bead ready": {"--limit", "-n", "--as", "--town", "--json"}, "status": {"--as", "--town", "--json"}}
OPERATOR = "operator"  # guard.OPERATOR: `--as operator` is the operator
LIMIT_MAX = 500  # what `guard.limit` allows (a test keeps them equal)


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
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= LIMIT_MAX:
            return False  # the command says what is wrong with it
        limit = int(value)
    town = options.get("--town") or os.environ.get("GASTOWN_TOWN") or None
    settings = recalled(Path(town) if town else None)
    if settings is None:
        return False
    from gastown_mcp.town.glance import Glance

    try:
        glance = Glance(
            settings["name"], settings["prefix"], settings["db"], settings["journal"], durable=settings["durable"]
        )
    except Exception:
        return False  # the command reports it, the same way as always
    try:
        data = read(glance, command, limit, options.get("--as", OPERATOR), settings["lease_seconds"])
    except Exception:
        return False
    finally:
        glance.close()
    if data is None:
        return False
    from gastown_mcp.cli import plain

    if "--json" in options:
        plain.write(json.dumps(data, indent=2) + "\n")
    elif command == "bead ready":
        plain.write(plain.bead_table(data, plain.Out.of(sys.stdout)))
    else:
        plain.write(plain.status_text(data, plain.Out.of(sys.stdout)))
    return True


def read(glance: Glance, command: str, limit: int, name: str, lease_seconds: float) -> Any:
    """What the command prints as JSON, read as the operator or as agent `name`; None (having changed nothing)
    when `Town` would refuse the agent or the call, which the command then reports."""
    if name == OPERATOR:
        return glance.ready(limit) if command == "bead ready" else glance.status()
    from gastown_mcp.town import roles

    role = glance.caller(name)
    if role is None or not roles.can(role, "bead.read" if command == "bead ready" else "town.status"):
        return None
    glance.renew(name, lease_seconds)
    if command == "bead ready":
        return glance.ready(limit)
    return glance.status(budgets=roles.can(role, "town.budget"), usage=roles.can(role, "town.usage"))


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


def recalled(town: Path | None) -> dict[str, Any] | None:
    """The settings a full command recorded for the town (`remember`), if still current."""
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
    kinds = {"name": str, "prefix": str, "db": str, "journal": str, "lease_seconds": float, "durable": bool}
    if not isinstance(settings, dict) or any(type(settings.get(f)) is not kind for f, kind in kinds.items()):
        return None
    return {**settings, "db": Path(settings["db"]), "journal": Path(settings["journal"])}


def remember(town: Path, key: dict[str, str], settings: Settings) -> None:
    """Record what the quick path needs of the settings a full command loaded, under `key` (taken before
    loading); a town directory that cannot be written just keeps the full path."""
    path = town / STAMP
    needed = {
        "name": settings.town.name,
        "prefix": settings.town.prefix,
        "db": str(settings.db_path),
        "journal": str(settings.journal_path),
        "lease_seconds": float(settings.lease.seconds),
        "durable": settings.dogs.durable,
    }
    record = {"key": key, "settings": needed}
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
