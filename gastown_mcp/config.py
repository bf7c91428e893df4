"""Settings, read once at the edge from `town.toml` and `GASTOWN_*` environment variables.

`load_settings(town_dir)` is the only function that reads files or the environment for configuration; the
result is passed down to everything else. Environment variables override the file:
`GASTOWN_<SECTION>__<FIELD>` (e.g. `GASTOWN_LEASE__SECONDS=120`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from gastown_mcp.errors import InvalidInput
from gastown_mcp.models import StrictModel

TOWN_FILE = "town.toml"
DB_FILE = "town.db"
JOURNAL_FILE = "events.jsonl"


_Section = StrictModel


class TownSection(_Section):
    name: str = "town"
    prefix: str = Field(default="gt", pattern=r"^[a-z][a-z0-9]{0,7}$")


class LeaseSection(_Section):
    seconds: float = Field(default=600.0, gt=0, description="how long a claim lasts without a call from its holder")


class ServerSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    allowed_hosts: list[str] = Field(default_factory=list, description="extra Host headers to accept")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins besides loopback and the server's own (e.g. https://app.example); "
        "`scheme://host:*` allows any port",
    )


class Price(_Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0, description="default 1.25 × input (5-minute cache)")
    cache_read: float | None = Field(default=None, ge=0, description="default 0.1 × input")

    @property
    def write(self) -> float:
        return self.input * 1.25 if self.cache_write is None else self.cache_write

    @property
    def read(self) -> float:
        return self.input * 0.1 if self.cache_read is None else self.cache_read


class Upstream(_Section):
    """Somewhere that serves the Messages API: Anthropic, Ollama, llama.cpp, or the stand-in."""

    base_url: str = Field(description="e.g. https://api.anthropic.com or http://127.0.0.1:11434")
    key_env: str | None = Field(
        default="ANTHROPIC_API_KEY",
        description='environment variable holding this upstream\'s key; "" or None = it needs no key',
    )
    key_file: str | None = Field(
        default=None,
        description="file holding this upstream's key (relative to the town directory), read at start instead of "
        "key_env; `gastown model serve` writes one for a local model server",
    )
    auth: Literal["x-api-key", "bearer"] = "x-api-key"
    price: Price | None = Field(
        default=None,
        description="USD per Mtok for every model this upstream serves (e.g. {input = 0, output = 0} for a local "
        "model); None = the [gateway] prices table by model",
    )

    @model_validator(mode="before")
    @classmethod
    def _file_replaces_env(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("key_file") and "key_env" not in data:
            data = {**data, "key_env": None}
        return data

    @property
    def key_ref(self) -> str | None:
        """Where the edge finds this upstream's key: its `key_env` variable, or `file:<key_file>`."""
        if self.key_file:
            return f"file:{self.key_file}"
        return self.key_env or None  # key_env = "" in town.toml: no key (TOML has no null)


class RouteRule(_Section):
    """Send requests from agents matching `agent` for models matching `model` (globs) to `upstream`."""

    agent: str = Field(default="*", description="agent name or glob")
    model: str = Field(default="*", description="model id or glob")
    upstream: str = Field(description="name of an upstream in the gateway settings")


class GatewaySection(_Section):
    """`[gateway]`: where the gateway listens, its upstreams (base URL + which provider-key variable), routes,
    prices and limits. Provider keys are never in here, only the names of the variables the edge reads."""

    host: str = "127.0.0.1"
    port: int = Field(default=8766, ge=0, le=65535)
    upstreams: dict[str, Upstream] = Field(
        default_factory=lambda: {"anthropic": Upstream(base_url="https://api.anthropic.com")}
    )
    default_upstream: str = "anthropic"
    routes: list[RouteRule] = Field(default_factory=list, description="tried after routes set at runtime")
    prices: dict[str, Price] = Field(default_factory=dict, description="model glob → USD per Mtok overrides")
    exhausted_status: int = Field(
        default=402,
        description="HTTP status for a spent budget; Claude Code 2.1 stops on 400/402 without retrying "
        "(it retries 401, 429 and 5xx, and words 403 as an auth failure)",
    )
    busy_retry_after_seconds: int = Field(default=2, ge=1)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=600.0, gt=0)
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="largest /v1/messages body; checked before it is read"
    )
    max_count_tokens_body_bytes: int = Field(default=1024 * 1024, gt=0, description="largest count_tokens body")
    stale_reservation_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="unused: a reservation now lives only as long as the gateway that made it (released at start)",
    )
    max_tokens_limit: int = Field(
        default=128_000, gt=0, description="largest max_tokens one request may ask for (and so reserve)"
    )
    max_tokens_by_role: dict[str, int] = Field(
        default_factory=dict, description="role → a max_tokens cap for that role instead of max_tokens_limit"
    )
    # Deny by default: each of these lets a request make the provider act or fetch on the agent's behalf.
    # Keys are roles; "*" applies to every role. Values are globs.
    allowed_server_tools: dict[str, list[str]] = Field(
        default_factory=dict,
        description='role → tool types beyond custom tools, e.g. {polecat = ["web_search_*"]}',
    )
    allowed_mcp_servers: dict[str, list[str]] = Field(
        default_factory=dict, description="role → URLs the provider may connect to for `mcp_servers`"
    )
    allowed_betas: dict[str, list[str]] = Field(
        # Exactly what Claude Code 2.1.197 sends in `anthropic-beta` on every /v1/messages request (captured
        # from the stand-in's request log for scripted-standin, claude-sonnet-4-5, claude-opus-4-5 and
        # claude-haiku-4-5). "*" is kept when town.toml lists other roles only; set "*" = [] to allow none.
        default_factory=lambda: {
            "*": [
                "claude-code-20250219",
                "interleaved-thinking-2025-05-14",
                "thinking-token-count-2026-05-13",
                "context-management-2025-06-27",
                "prompt-caching-scope-2026-01-05",
                "mid-conversation-system-2026-04-07",
                "effort-2025-11-24",
            ]
        },
        description="role → anthropic-beta values to pass upstream; any other beta is refused",
    )

    @model_validator(mode="before")
    @classmethod
    def _anthropic_stays(cls, data: Any) -> Any:
        # Adding a local upstream in town.toml must not drop Anthropic while the default (or a route) uses it.
        ups = data.get("upstreams") if isinstance(data, dict) else None
        routes = data.get("routes") if isinstance(data, dict) else None
        used = data.get("default_upstream", "anthropic") == "anthropic" or any(
            isinstance(r, dict) and r.get("upstream") == "anthropic" for r in routes or []
        )
        if isinstance(ups, dict) and "anthropic" not in ups and used:
            data = {**data, "upstreams": {"anthropic": Upstream(base_url="https://api.anthropic.com"), **ups}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _claude_code_betas_stay(cls, data: Any) -> Any:
        betas = data.get("allowed_betas") if isinstance(data, dict) else None
        if isinstance(betas, dict) and "*" not in betas:
            default = cls.model_fields["allowed_betas"].get_default(call_default_factory=True)
            data = {**data, "allowed_betas": {**default, **betas}}
        return data

    @model_validator(mode="after")
    def _known_upstreams(self) -> GatewaySection:
        named = [self.default_upstream, *(r.upstream for r in self.routes)]
        unknown = sorted({n for n in named if n not in self.upstreams})
        if unknown:
            raise ValueError(f"routes name unknown upstreams {unknown}; define them under [gateway.upstreams.NAME]")
        from gastown_mcp.models import Role

        roles = {r.value for r in Role}
        for name in ("max_tokens_by_role", "allowed_server_tools", "allowed_mcp_servers", "allowed_betas"):
            bad = sorted(set(getattr(self, name)) - roles - {"*"})
            if bad:
                raise ValueError(f'{name} names unknown roles {bad}; use one of {sorted(roles)} or "*"')
        if any(v <= 0 for v in self.max_tokens_by_role.values()):
            raise ValueError("max_tokens_by_role caps must be positive integers")
        return self

    def max_tokens_cap(self, role: str) -> tuple[int, str]:
        """The max_tokens cap for a role, and the setting that sets it."""
        if role in self.max_tokens_by_role:
            return self.max_tokens_by_role[role], f"max_tokens_by_role.{role}"
        return self.max_tokens_limit, "max_tokens_limit"

    @staticmethod
    def allowed(table: dict[str, list[str]], role: str) -> list[str]:
        """The globs an allow-list table grants a role: its own and those for every role ("*")."""
        return [*table.get("*", []), *table.get(role, [])]


GatewayConfig = GatewaySection  # the gateway's name for its section


class RuntimeSection(_Section):
    """`[runtime]`: the agent image and per-role container limits (`[runtime.limits.polecat]` memory_mb = ...)."""

    backend: Literal["docker", "swarm"] = Field(
        default="docker", description="docker: agents on this machine; swarm: on a Docker Swarm's nodes (docs/scale.md)"
    )
    image: str = "gastown-agent:latest"
    limits: dict[str, dict[str, float]] = Field(default_factory=dict)
    subnet: str | None = Field(default=None, description="the town network's subnet; None lets Docker pick")
    agent_uid: int = Field(
        default=61000, ge=1000, lt=2**31 - 1, description="uid agents run as: no host account (rebuild the image)"
    )
    agent_gid: int = Field(default=61000, ge=1000, lt=2**31 - 1, description="gid agents run as (rebuild the image)")
    agents_disk_mb: int = Field(
        default=65536,
        ge=0,
        description="the btrfs image all agents' directories live on (sparse; each agent capped at its limits' "
        "disk_mb); 0 leaves them uncapped on the town's own disk",
    )
    swarm_placement: list[str] = Field(
        default_factory=lambda: ["node.role==worker"], description="swarm constraints where agents may run"
    )
    swarm_work_mb: int = Field(
        default=2048, ge=64, description="size of a swarm agent's /work (memory: counted in its memory limit)"
    )
    swarm_node_docker: str = Field(
        default="",
        description="command that runs `docker` against one swarm node's own engine ({hostname}, {address} filled "
        "in, e.g. 'ssh {hostname} docker'); lets an emergency stop pause agents on their nodes. Empty: it holds "
        "the gateway and dispatch only",
    )


class RigSection(_Section):
    """`[rigs.<name>]`: how the merge queue lands that rig's work on `main`."""

    gates: list[str] = Field(
        default_factory=list,
        description="shell commands that must pass on the candidate tree (in a container, no network); none = land",
    )
    gate_timeout_seconds: int = Field(default=600, ge=10, le=86400)
    batch_size: int = Field(default=4, ge=1, le=32, description="requests tested together; a red batch is bisected")
    mode: Literal["rebase", "merge"] = Field(default="rebase", description="how a branch goes onto main")
    auto: bool | None = Field(default=None, description="the scheduler dispatches here; None follows [scheduler]")
    max_polecats: int | None = Field(default=None, ge=0, le=1000, description="polecats alive on this rig at once")
    review: Literal["none", "model"] = Field(
        default="none", description="model: the deacon also asks a model to judge each diff against its acceptance"
    )
    push: str | None = Field(
        default=None, description="a remote of the rig's clone (e.g. origin) that main is pushed to on each landing"
    )


class PlannerSection(_Section):
    """`[planner]`: the model-backed refinery planner and deacon reviewer (through the town's own gateway)."""

    model: str = Field(default="claude-sonnet-4-5", min_length=1, max_length=200)
    max_tokens: int = Field(default=8000, ge=256, le=64_000, description="per planner or reviewer request")
    max_items: int = Field(default=25, ge=1, le=200, description="beads one plan may create at most")
    max_criteria: int = Field(default=8, ge=1, le=50, description="acceptance criteria per bead at most")
    timeout_seconds: float = Field(default=300.0, gt=0, description="one model request, end to end")


class OverseerSection(_Section):
    """`[overseer]`: the model loop that directs the mayor toward the operator's goals (in `gastown up`)."""

    enabled: bool = Field(default=False, description="run the overseer loop in `gastown up`")
    model: str = Field(default="claude-sonnet-4-5", min_length=1, max_length=200)
    budget_usd: float | None = Field(
        default=5.0, ge=0, description="the overseer's own USD budget at the gateway; None = no budget of its own"
    )
    max_tokens: int = Field(default=2000, ge=256, le=64_000, description="per overseer request")
    interval_seconds: float = Field(default=2.0, gt=0, description="how often it reads new events (no model call)")
    failure_threshold: int = Field(default=2, ge=1, description="failures of one bead before the overseer looks")
    max_attempts: int = Field(
        default=2, ge=1, description="issues of one directive that did not stick before it asks the human instead"
    )
    backoff_seconds: float = Field(
        default=300.0, ge=0, description="wait before a directive that did not stick is issued again (doubles)"
    )
    timeout_seconds: float = Field(default=120.0, gt=0, description="one model request, end to end")


class LimitsSection(_Section):
    """`[limits]`: how much of the shared MCP server and bead queue one agent may take (README "Security")."""

    sessions_per_agent: int = Field(
        default=8, ge=1, le=1000, description="open MCP HTTP sessions per agent; at the cap the oldest idle one closes"
    )
    session_idle_seconds: float = Field(
        default=600.0, gt=0, description="an MCP HTTP session with no request in flight for this long is closed"
    )
    polecat_held_beads: int = Field(default=1, ge=1, le=100, description="beads one polecat may hold at once")
    polecat_creates_per_hour: int = Field(default=20, ge=0, description="side-work beads one polecat may create")
    polecat_bead_chars: int = Field(
        default=4000, ge=100, description="largest title + description + acceptance of a polecat's side-work bead"
    )
    polecat_top_priority: int = Field(
        default=2, ge=0, le=4, description="highest priority (lowest number) of side work from a polecat with no bead"
    )


class SchedulerSection(_Section):
    """`[scheduler]`: dispatching ready beads to fresh polecats on their rig, without a mayor slinging each."""

    auto: bool = Field(default=False, description="sling ready beads to polecats on their rig by itself")
    max_polecats: int = Field(default=10, ge=0, le=1000, description="polecats alive at once in the town")
    spawn_per_tick: int = Field(default=4, ge=1, le=100, description="launches per reconciler tick at most")
    interval_seconds: float = Field(
        default=1.0, gt=0, description="time between ticks when nothing in the town process wakes it"
    )
    breaker_failures: int = Field(default=3, ge=1, description="failed launches on a rig that pause its dispatch")
    breaker_window_seconds: float = Field(default=600.0, gt=0)
    breaker_cooldown_seconds: float = Field(default=300.0, gt=0, description="how long a tripped rig waits")


class WitnessSection(_Section):
    interval_seconds: float = Field(default=5.0, gt=0, description="time between ticks of `gastown up`")
    max_attempts: int = Field(default=3, ge=1, description="failed attempts before a bead is blocked")
    idle_seconds: float = Field(default=300.0, gt=0, description="no tool call and no file change for this long")
    crash_loop_failures: int = Field(default=3, ge=1, description="failures of one bead within the window")
    crash_loop_window_seconds: float = Field(default=900.0, gt=0)
    respawn: bool = Field(default=True, description="give a bead whose polecat died to a fresh polecat on its rig")
    model_failures: int = Field(
        default=5, ge=1, description="failed model calls in a row (no success between) before the mayor is told"
    )


class DogsSection(_Section):
    """`[dogs]`: durability and health checks (integrity, journal, WAL, backups, disk, orphans, docker,
    gateway)."""

    durable: bool = Field(default=True, description="fdatasync the journal before a write is acknowledged")
    interval_seconds: float = Field(default=30.0, gt=0, description="time between dog ticks in `gastown up`")
    integrity_interval_seconds: float = Field(default=3600.0, gt=0)
    backup_interval_seconds: float = Field(default=3600.0, gt=0)
    backup_keep: int = Field(default=24, ge=1, le=10_000, description="verified backups kept in backups/")
    journal_max_mb: float = Field(
        default=1024.0,
        gt=0,
        description="past this the backup dog backs up at once, and the journal keeps only what that backup lacks",
    )
    disk_warn_mb: int = Field(default=2048, ge=0, description="free space under the town or Docker root: warn")
    disk_pause_mb: int = Field(default=1024, ge=0, description="... pause dispatch")
    disk_estop_mb: int = Field(default=256, ge=0, description="... emergency stop")
    exited_retention_seconds: float = Field(default=3600.0, ge=0, description="exited containers kept this long")
    agent_archive_seconds: float = Field(
        default=86400.0, ge=0, description="exited agents leave the hot agents table after this long"
    )
    usage_retention_days: float = Field(
        default=30.0, ge=1, description="usage rows older than this roll into per-agent daily totals"
    )
    events_retention_days: float = Field(
        default=90.0, ge=1, description="events older than this move to archive/ as compressed JSONL"
    )
    ratelimit_storm: int = Field(default=5, ge=1, description="upstream 429s in the window that pause dispatch")
    ratelimit_window_seconds: float = Field(default=60.0, gt=0)
    ratelimit_backoff_seconds: float = Field(default=120.0, gt=0, description="dispatch pause after a 429 storm")
    probe_upstreams: bool = Field(
        default=False, description="the gateway dog opens a TCP connection to each upstream (no model call)"
    )


class DashboardSection(_Section):
    """`[dashboard]`: the operator's web dashboard and `/metrics`, served by `gastown up` on a port of its own."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="loopback by default; the operator's token opens it")
    port: int = Field(default=0, ge=0, le=65535, description="0 = any free port (`gastown init` writes 8767)")
    allowed_hosts: list[str] = Field(default_factory=list, description="extra Host headers to accept")
    refresh_seconds: float = Field(
        default=10.0,
        gt=0,
        description="a quiet live feed checks the town can be read this often; an agent's log tail re-reads",
    )
    session_hours: float = Field(default=12.0, gt=0, description="a login lasts this long")


class OtelSection(_Section):
    """`[otel]`: optional OpenTelemetry export of one trace per bead run (off unless `endpoint` is set)."""

    endpoint: str | None = Field(
        default=None, description="an OTLP/HTTP collector's base URL, e.g. http://127.0.0.1:4318 (spans to /v1/traces)"
    )
    service_name: str = Field(default="gastown", min_length=1, description="the `service.name` of every span")
    timeout_seconds: float = Field(default=5.0, gt=0, description="one export's deadline")

    @model_validator(mode="after")
    def _http_url(self) -> OtelSection:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"[otel] endpoint {self.endpoint!r} is not an http(s) URL: give the collector's OTLP/HTTP base URL "
                "(e.g. http://127.0.0.1:4318), or remove the key to turn export off"
            )
        return self


class Settings(_Section):
    """Everything configurable about one town."""

    town_dir: Path
    town: TownSection = Field(default_factory=TownSection)
    lease: LeaseSection = Field(default_factory=LeaseSection)
    server: ServerSection = Field(default_factory=ServerSection)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    witness: WitnessSection = Field(default_factory=WitnessSection)
    rigs: dict[str, RigSection] = Field(default_factory=dict)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    planner: PlannerSection = Field(default_factory=PlannerSection)
    overseer: OverseerSection = Field(default_factory=OverseerSection)
    dogs: DogsSection = Field(default_factory=DogsSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    dashboard: DashboardSection = Field(default_factory=DashboardSection)
    otel: OtelSection = Field(default_factory=OtelSection)

    def rig(self, name: str) -> RigSection:
        """The settings of a rig (defaults when town.toml has no `[rigs.<name>]`)."""
        return self.rigs.get(name) or RigSection()

    @property
    def db_path(self) -> Path:
        return self.town_dir / DB_FILE

    @property
    def journal_path(self) -> Path:
        return self.town_dir / JOURNAL_FILE

    @property
    def backups_dir(self) -> Path:
        return self.town_dir / "backups"

    @property
    def is_town(self) -> bool:
        """town.toml is here: an existing town, whose database must not silently start empty."""
        return (self.town_dir / TOWN_FILE).exists()


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in env.items():
        if not key.startswith("GASTOWN_") or "__" not in key:
            continue
        section, _, field = key[len("GASTOWN_") :].lower().partition("__")
        if section in Settings.model_fields and section != "town_dir":
            out.setdefault(section, {})[field] = _parse_env_value(value)
    return out


def _parse_env_value(value: str) -> Any:
    if value.startswith(("[", "{")):
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def load_settings(town_dir: Path | str, env: Mapping[str, str] | None = None) -> Settings:
    """Read `town.toml` in `town_dir` (if any) and the environment into one `Settings`."""
    town_dir = Path(town_dir).expanduser().resolve()
    data: dict[str, Any] = {}
    toml_path = town_dir / TOWN_FILE
    if toml_path.exists():
        try:
            data = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{toml_path} is not valid TOML ({exc}); fix the file or remove it") from exc
    for section, fields in _env_overrides(os.environ if env is None else env).items():
        data.setdefault(section, {}).update(fields)
    try:
        return Settings(town_dir=town_dir, **data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise InvalidInput(f"bad settings in {toml_path} or GASTOWN_* variables: {problems}") from exc


def default_town_toml(name: str, prefix: str) -> str:
    return (
        "# gastown town settings; GASTOWN_<SECTION>__<FIELD> environment variables override these.\n"
        f'[town]\nname = "{name}"\nprefix = "{prefix}"\n\n'
        "[lease]\nseconds = 600\n\n"
        '[server]\nhost = "127.0.0.1"\nport = 8765\n\n'
        '[dashboard]\nhost = "127.0.0.1"\nport = 8767\n'
    )
