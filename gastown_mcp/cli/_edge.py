"""The CLI's edge: shared options, finding the town directory, building `Town`, and printing results.

Every command takes the same `--town`, `--as` and `--json` options from here, opens the town with
`open_town()` (the composition root builds it), and prints with `emit()`; nothing else in the CLI reads the
environment or builds a town.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from gastown_mcp import assemble
from gastown_mcp.cli import quick
from gastown_mcp.config import TOWN_FILE, Settings, load_settings
from gastown_mcp.errors import InvalidInput, NotFound
from gastown_mcp.models import Agent
from gastown_mcp.town import Town, operator

TownDir = Annotated[
    Path | None,
    typer.Option(
        "--town",
        envvar="GASTOWN_TOWN",
        help="Town directory (default: the current directory if it holds town.toml).",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
AsAgent = Annotated[
    str | None,
    typer.Option("--as", help="Act as this agent instead of the operator.", show_default=False),
]


def find_town_dir(town_dir: Path | None) -> Path:
    """The town directory from `--town`/GASTOWN_TOWN, else the current directory if it is a town."""
    candidate = (town_dir or Path.cwd()).expanduser()
    if not (candidate / TOWN_FILE).is_file():
        where = f" at {candidate}" if town_dir is not None else ""
        raise NotFound(f"no town here{where}: run `gastown init` or pass --town")
    return candidate


@contextmanager
def open_town(town_dir: Path | None) -> Iterator[Town]:
    """Build settings and town for one command, and close the town afterwards."""
    with closing(assemble.open_town(checked_settings(find_town_dir(town_dir)))) as town:
        yield town


def checked_settings(town_dir: Path) -> Settings:
    """The town's settings, loaded (and so checked), and recorded for the quick read path (`quick`)."""
    found = town_dir.expanduser().resolve()
    key = quick.settings_key(found)  # taken before loading: a town.toml edited meanwhile is not recorded as checked
    settings = load_settings(found)
    quick.remember(found, key, settings)
    return settings


@contextmanager
def attached_town(town_dir: Path | None) -> Iterator[Town]:
    """The town of a running `gastown up` in this directory, able to start and stop containers."""
    with closing(assemble.attach_town(checked_settings(find_town_dir(town_dir)))) as town:
        yield town


def actor(town: Town, name: str | None) -> Agent:
    """The operator (overseer rights), or the named agent when `--as` was given."""
    return town.agent(name) if name else operator()


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any, *, err: bool = False) -> None:
    typer.echo(json.dumps(jsonable(value), indent=2), err=err)


def emit(as_json: bool, value: Any, render: Callable[[Console], None]) -> None:
    """Print `value` as JSON, or call `render` with a rich console for people."""
    if as_json:
        print_json(value)
    else:
        render(Console())


def note(text: str) -> None:
    """A human remark on stderr, so stdout stays clean for pipes."""
    Console(stderr=True).print(text)


def text_value(value: str | None, option: str) -> str | None:
    """A text option's value, or - for `@FILE` - that file's text, or - for `-` - standard input's.
    `@@...` is the literal text `@...`."""
    if value is None:
        return None
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            return path.read_text()
        except FileNotFoundError:
            raise NotFound(f"{option} {value}: no file {path} (write @@ for text that starts with @)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{option} {value}: cannot read {path} as text: {exc}") from None
    return value
