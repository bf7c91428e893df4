"""Upstreams that cannot serve: a missing key, a server that is down, one that answers errors. Each failed call
is refused loudly (an Anthropic-format error saying what to do), recorded with why on its usage row, and shows
as the agent's last model error until a call succeeds; the witness tells the mayor after N in a row.

The real `anthropic` client → gateway (uvicorn) → scripted stand-ins (uvicorn), on loopback.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest
from fakes import FakeRuntime

from gastown_mcp.assemble import provider_env
from gastown_mcp.config import GatewaySection, Settings, WitnessSection
from gastown_mcp.gateway import build_gateway, localmodel
from gastown_mcp.models import AgentState, Role
from gastown_mcp.runtime.protocol import ContainerStatus, LaunchSpec
from gastown_mcp.serving import bind, serve
from gastown_mcp.standin import Fails, Hello, build_standin
from gastown_mcp.store import Store
from gastown_mcp.supervisor.reconciler import Reconciler
from gastown_mcp.supervisor.witness import Did, Witness
from gastown_mcp.town import Fleet, FleetConfig, Town, operator

SENTINEL = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"


@dataclass
class Gw:
    url: str
    town: Town
    key: str

    def client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=self.key, max_retries=0)

    async def ask(self, model: str) -> int:
        """One request; the HTTP status it got."""
        try:
            await self.client().messages.create(
                model=model, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
        except anthropic.APIStatusError as exc:
            return exc.status_code
        return 200


@contextlib.asynccontextmanager
async def gateway(store: Store, env: dict[str, str], witness: WitnessSection | None = None) -> AsyncIterator[Gw]:
    """Upstreams: `anthropic` (a stand-in, keyed by ANTHROPIC_API_KEY), `nokey` (its key variable is never set),
    `down` (nothing listens), `failing` (answers 529). Routes send `broken-*`, `gone-*` and `sad-*` to them."""
    closed = bind()
    down_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    async with (
        serve(build_standin(Hello(), expected_key=SENTINEL).app) as ok_url,
        serve(build_standin(Fails(529)).app) as failing_url,
    ):
        cfg = GatewaySection.model_validate(
            {
                "upstreams": {
                    "anthropic": {"base_url": ok_url},
                    "nokey": {"base_url": ok_url, "key_env": "NEVER_SET_KEY"},
                    "down": {"base_url": down_url, "key_env": None},
                    "failing": {"base_url": failing_url, "key_env": None},
                },
                "routes": [
                    {"model": "broken-*", "upstream": "nokey"},
                    {"model": "gone-*", "upstream": "down"},
                    {"model": "sad-*", "upstream": "failing"},
                ],
            }
        )
        update: dict[str, Any] = {"gateway": cfg}
        if witness is not None:
            update["witness"] = witness
        settings = store.settings.model_copy(update=update)
        town = Town(store, settings)
        key = town.agent_add(operator(), "polecat-1", Role.polecat.value, "web").gateway_key
        async with serve(build_gateway(town, provider_env(settings, env))) as url:
            yield Gw(url, town, key)


async def test_a_call_routed_to_an_upstream_without_its_key_is_refused_saying_what_to_do(store: Store) -> None:
    async with gateway(store, {"ANTHROPIC_API_KEY": SENTINEL}) as g:
        with pytest.raises(anthropic.APIStatusError) as refused:
            await g.client().messages.create(
                model="broken-1", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
        counted = await g.client().messages.count_tokens(  # an unmetered path is refused too, but not recorded
            model="scripted-standin", messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(anthropic.APIStatusError):
            await g.client().messages.count_tokens(model="broken-1", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503
    message = str(refused.value)
    assert "NEVER_SET_KEY" in message and "gastown route add" in message and "nokey" in message
    assert counted.input_tokens > 0
    [row] = store.db.query("SELECT * FROM usage")
    assert (row["upstream"], row["status"], row["outcome"]) == ("nokey", 503, "error")
    assert "NEVER_SET_KEY" in row["error"] and row["input_tokens"] == row["output_tokens"] == 0


async def test_a_down_or_failing_upstream_is_recorded_with_why_and_shows_until_a_call_succeeds(store: Store) -> None:
    async with gateway(store, {"ANTHROPIC_API_KEY": SENTINEL}) as g:
        assert await g.ask("gone-1") == 502
        assert await g.ask("sad-1") == 529
        [failing] = g.town.model_errors(operator())
        assert (failing.agent, failing.failures, failing.status, failing.upstream) == ("polecat-1", 2, 529, "failing")
        assert "scripted stand-in error 529" in failing.error and "answered 529" in failing.error
        gone = store.db.query("SELECT error FROM usage WHERE upstream = 'down'")[0]["error"]
        assert "could not reach upstream down" in gone and "is its model server running" in gone
        assert await g.ask("scripted-standin") == 200
        assert g.town.model_errors(operator()) == []
        assert await g.ask("broken-2") == 503
        [again] = g.town.model_errors(operator(), "polecat-1")
    assert again.failures == 1 and again.upstream == "nokey"


async def test_the_witness_tells_the_mayor_once_per_run_of_failed_model_calls(store: Store, settings: Settings) -> None:
    async with gateway(store, {"ANTHROPIC_API_KEY": SENTINEL}, WitnessSection(model_failures=3)) as g:
        town = g.town
        mayor = town.agent_add(operator(), "mayor", Role.mayor.value).agent
        town.set_agent_state(operator(), "polecat-1", AgentState.running, "launched")
        witness = Witness(town)

        def told() -> list[str]:
            return [m.subject for m in town.inbox(mayor, unread_only=False) if "model calls failed" in m.subject]

        for _ in range(2):
            assert await g.ask("broken-1") == 503
        first = witness.tick()
        assert [a for a in first if a.verb is Did.model_failing] == [] and told() == []
        assert await g.ask("gone-1") == 502
        actions = [a for a in witness.tick() if a.verb is Did.model_failing]
        assert [(a.target, a.reason) for a in actions] == [("polecat-1", "3 failed model calls")]
        [subject] = told()
        [mail] = [m for m in town.inbox(mayor, unread_only=False) if m.subject == subject]
        assert "could not reach upstream down" in mail.body and "gastown route list" in mail.body
        assert await g.ask("broken-1") == 503
        assert [a for a in witness.tick() if a.verb is Did.model_failing] == []  # the same run: told once
        assert await g.ask("scripted-standin") == 200
        for _ in range(3):
            assert await g.ask("sad-1") == 529
        assert [a.target for a in witness.tick() if a.verb is Did.model_failing] == ["polecat-1"]
        assert len(told()) == 2


def test_an_upstream_added_in_town_toml_keeps_anthropic_and_reads_its_key_from_its_file(settings: Settings) -> None:
    cfg = GatewaySection.model_validate(
        {"upstreams": {"local": {"base_url": "http://127.0.0.1:8767", "key_file": "run/local.key", "auth": "bearer"}}}
    )
    assert sorted(cfg.upstreams) == ["anthropic", "local"] and cfg.default_upstream == "anthropic"
    local = cfg.upstreams["local"]
    assert local.key_env is None and local.key_ref == "file:run/local.key"
    standin_only = GatewaySection.model_validate(
        {"upstreams": {"standin": {"base_url": "http://127.0.0.1:1"}}, "default_upstream": "standin"}
    )
    assert sorted(standin_only.upstreams) == ["standin"]  # nothing uses anthropic: not added
    keyless = GatewaySection.model_validate(
        {"upstreams": {"ollama": {"base_url": "http://127.0.0.1:1", "key_env": ""}}}
    )
    assert keyless.upstreams["ollama"].key_ref is None  # TOML has no null: "" means it needs no key
    configured = settings.model_copy(update={"gateway": cfg})
    assert provider_env(configured, {}) == {}  # no file yet: the gateway warns and refuses calls routed there
    key_file = Path(settings.town_dir) / "run" / "local.key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text("gtl-local-key-0123456789abcdef\n")
    assert provider_env(configured, {"ANTHROPIC_API_KEY": "sk-1", "HOME": "/root"}) == {
        "ANTHROPIC_API_KEY": "sk-1",
        "file:run/local.key": "gtl-local-key-0123456789abcdef",
    }


class Recording(FakeRuntime):
    """The fake runtime, keeping every launch spec."""

    def __init__(self) -> None:
        super().__init__()
        self.specs: list[LaunchSpec] = []

    def launch(self, spec: LaunchSpec) -> ContainerStatus:
        self.specs.append(spec)
        return super().launch(spec)


def test_a_launched_polecat_gets_neither_the_local_model_key_nor_its_file(settings: Settings) -> None:
    source = settings.town_dir.parent / "source"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-C", str(source)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("web\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "initial"], check=True)
    key_file = settings.town_dir / "run" / "local-model.key"
    key = localmodel.ensure_key(key_file)
    cfg = GatewaySection.model_validate(
        {"upstreams": {"local": {"base_url": "http://127.0.0.1:8767", "key_file": "run/local-model.key"}}}
    )
    configured = settings.model_copy(update={"gateway": cfg})
    assert provider_env(configured, {})["file:run/local-model.key"] == key  # the gateway has it ...
    runtime = Recording()
    config = FleetConfig(town="t", town_dir=settings.town_dir, mcp_url="http://town/mcp", gateway_url="http://gw")
    store = Store(configured)
    try:
        town = Town(store, configured, Fleet(store, runtime, config))
        town.rig_add(operator(), "web", str(source))
        town.sling(operator(), town.bead_create(operator(), "work").id, "web")
        Reconciler(town).tick()
    finally:
        store.close()
    [spec] = runtime.specs  # ... the agent does not: not in its environment, not in what is mounted
    assert spec.env["ANTHROPIC_BASE_URL"] == "http://gw" and all(key not in v for v in spec.env.values())
    run_dir = (settings.town_dir / "run").resolve()
    assert all(not run_dir.is_relative_to(Path(m.source).resolve()) for m in spec.mounts)
    assert all(not Path(m.source).resolve().is_relative_to(run_dir) for m in spec.mounts)
