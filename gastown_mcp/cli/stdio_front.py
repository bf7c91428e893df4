"""The front of `gastown serve --as NAME` over stdio: the `initialize` answer before the MCP SDK has loaded.

Loading the SDK takes about a second, and a client such as Claude Code in `-p` mode starts its first model turn
long before that. So the front, with only the standard library and the town, does this in order:

1. checks the agent exactly as the command does (`Town.agent`); on any error it gives way to the ordinary
   command, which reports that error the same way as always (nothing is read from stdin before this);
2. takes the wire (stdin and stdout move to private descriptors; fd 0 reads the null device and fd 1 writes
   to stderr, so stray output never corrupts the protocol) and reads the first message;
3. if it is an `initialize` request and the town holds the SDK's own answer to the same request from an earlier
   start (same gastown, SDK and server source, same role, same requested protocol version), sends that answer;
4. loads the server and gives it the first message and everything after it. The server answers `initialize`
   itself; that answer is checked against the one sent and dropped. With no cached answer the server's answer
   goes out as it is, and is cached for the next start.

If the server's answer ever differs from the cached one the client was sent, the cache is rewritten with the
server's answer and the session ends with an error on stderr: the client never runs a session on a handshake
the server did not give, and the next start sends the right one. The cache is one JSON file per role and
protocol version under the town's `run/stdio-initialize/`, written atomically (temporary file, then rename);
a file whose key does not match (another version, edited server source) is ignored and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from gastown_mcp.models import Agent
    from gastown_mcp.town import Town

CACHE_DIR = "run/stdio-initialize"
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class StaleAnswer(Exception):
    """The server's own `initialize` answer differs from the cached one the client was already sent."""


def stdio_args(argv: list[str]) -> tuple[str, Path | None] | None:
    """(agent, town dir) when `argv` is plainly `serve --as NAME [--town DIR]`; None for anything else, which
    the ordinary command parses (and reports on) as always."""
    if not argv or argv[0] != "serve":
        return None
    found: dict[str, str] = {}
    rest = argv[1:]
    while rest:
        head, *rest = rest
        name, eq, value = head.partition("=")
        if name not in ("--as", "--town") or name in found:
            return None
        if not eq:
            if not rest:
                return None
            value, *rest = rest
        if not value or value.startswith("-"):
            return None
        found[name] = value
    if "--as" not in found:
        return None
    town = found.get("--town") or os.environ.get("GASTOWN_TOWN") or None
    return found["--as"], Path(town) if town else None


def serve_from_argv(argv: list[str]) -> bool:
    """Serve `gastown serve --as NAME` through the front; False (having read nothing) when the ordinary command
    should run instead: other arguments, or any error finding the town or the agent, which it reports."""
    parsed = stdio_args(argv)
    if parsed is None:
        return False
    name, town_dir = parsed
    candidate = (town_dir or Path.cwd()).expanduser()
    from gastown_mcp import assemble
    from gastown_mcp.config import TOWN_FILE, load_settings

    if not (candidate / TOWN_FILE).is_file():
        return False  # the command says where to find or make a town
    try:
        town = assemble.open_town(load_settings(candidate))
    except Exception:
        return False
    try:
        try:
            agent = town.agent(name)
        except Exception:
            return False
        with contextlib.suppress(KeyboardInterrupt):
            serve(town, agent)
        return True
    finally:
        town.close()


@dataclass
class Wire:
    """The protocol's stdin and stdout after the front took them, and what the front did with the first message."""

    reader: BinaryIO
    out_fd: int
    first: bytes
    init_id: Any = None  # the id of the first message when it was an `initialize` request
    sent: dict[str, Any] | None = None  # the cached result the front already sent for it
    cache: Path | None = None  # where the server's own answer is cached (None: not cacheable)
    key: dict[str, str] = field(default_factory=dict)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.out_fd, view) :]

    def server_answered(self, message: dict[str, Any]) -> bool:
        """Take the server's own answer to the first `initialize`; True if it goes to the client (no answer was
        sent yet). A success is cached; one that differs from the answer sent raises StaleAnswer (after the
        cache is corrected)."""
        result = message.get("result")
        if self.sent is not None and result == self.sent:
            return False
        if self.cache is not None and isinstance(result, dict):
            _write_atomic(self.cache, {"key": self.key, "result": result})
        if self.sent is not None:
            raise StaleAnswer(
                "the cached answer to `initialize` differed from the server's own; the cache is corrected, "
                "start the server again"
            )
        return True


def serve(town: Town, agent: Agent) -> None:
    """Serve MCP over stdio as `agent`: answer `initialize` from the cache when it can, then hand over."""
    wire = take_wire()
    answer_first(wire, town, agent)
    from gastown_mcp.server.stdio_wire import serve_wire

    try:
        serve_wire(town, agent, wire)
    except* StaleAnswer as group:
        sys.stderr.write(f"error: {group.exceptions[0]}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def take_wire() -> Wire:
    """Move the protocol off fd 0 and fd 1 (to private descriptors) and read its first line."""
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout.flush()
    os.dup2(2, 1)
    reader = open(in_fd, "rb")  # noqa: SIM115 - the wire's reader lives as long as the server
    return Wire(reader=reader, out_fd=out_fd, first=reader.readline())


def answer_first(wire: Wire, town: Town, agent: Agent) -> None:
    """If the first message is `initialize` and its answer is cached, send it now."""
    try:
        message = json.loads(wire.first)
    except ValueError:
        return
    if not isinstance(message, dict) or message.get("method") != "initialize" or message.get("jsonrpc") != "2.0":
        return
    request_id = message.get("id")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        return
    wire.init_id = request_id
    params = message.get("params")
    if not _plain_initialize(params):
        return
    version: str = params["protocolVersion"]  # type: ignore[index]
    if not _SAFE.fullmatch(version):
        return
    wire.key = cache_key(agent.role.value, version)
    wire.cache = town.settings.town_dir / CACHE_DIR / f"{agent.role.value}-{version}.json"
    cached = read_cache(wire.cache, wire.key)
    if cached is None:
        return
    answer = {"jsonrpc": "2.0", "id": request_id, "result": cached}
    wire.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
    wire.sent = cached


def _plain_initialize(params: Any) -> bool:
    """The request carries what every `initialize` must (so the server's answer is the cached success)."""
    if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
        return False
    info = params.get("clientInfo")
    return (
        isinstance(params.get("capabilities"), dict)
        and isinstance(info, dict)
        and isinstance(info.get("name"), str)
        and isinstance(info.get("version"), str)
    )


def cache_key(role: str, protocol_version: str) -> dict[str, str]:
    """Everything the server's `initialize` answer depends on: gastown, the SDK, the server's source (edited in
    a source checkout without a new version), the role and the requested protocol version."""
    from importlib.metadata import PackageNotFoundError, version

    import gastown_mcp

    sdk = []
    for dist in ("mcp", "mcp-types"):
        try:
            sdk.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            sdk.append(f"{dist} -")
    source = hashlib.sha256()
    for path in sorted((Path(gastown_mcp.__file__).parent / "server").glob("*.py")):
        stat = path.stat()
        source.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return {
        "gastown": gastown_mcp.__version__,
        "sdk": ", ".join(sdk),
        "server_source": source.hexdigest()[:16],
        "role": role,
        "protocol_version": protocol_version,
    }


def read_cache(path: Path, key: dict[str, str]) -> dict[str, Any] | None:
    """The cached result at `path` if its key is `key` (anything unreadable or stale: None)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("result"), dict):
        return None
    result: dict[str, Any] = data["result"]
    return result


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only town still serves; it just starts the slow way
        sys.stderr.write(f"warning: could not cache the initialize answer at {path}: {exc}\n")
