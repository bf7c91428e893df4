"""A town whose planners are real: the real `anthropic` client -> the town's gateway -> the scripted stand-in,
each served on loopback from a thread, so tests call the (synchronous) `Town` directly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from gastown_mcp.config import GatewayConfig, Settings, Upstream
from gastown_mcp.gateway import build_gateway
from gastown_mcp.planners import build_models
from gastown_mcp.serving import serve_in_thread
from gastown_mcp.standin import Standin, build_standin
from gastown_mcp.standin.planner import Models
from gastown_mcp.store import Store
from gastown_mcp.town import Town

SENTINEL = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"


@contextlib.contextmanager
def planning_services(
    store: Store, settings: Settings, script: Any = None, town_class: type[Town] = Town, fleet: Any = None
) -> Iterator[tuple[Town, Standin, str]]:
    """The town, the stand-in behind its gateway, and the gateway's URL."""
    standin = build_standin(script or Models(), expected_key=SENTINEL)
    with serve_in_thread(standin.app) as upstream:
        cfg = GatewayConfig(upstreams={"standin": Upstream(base_url=upstream)}, default_upstream="standin")
        town = town_class(store, settings.model_copy(update={"gateway": cfg}), fleet)
        with serve_in_thread(build_gateway(town, {"ANTHROPIC_API_KEY": SENTINEL})) as gateway:
            town.use_models(build_models(gateway))
            yield town, standin, gateway


@contextlib.contextmanager
def planning_town(
    store: Store, settings: Settings, script: Any = None, town_class: type[Town] = Town, fleet: Any = None
) -> Iterator[tuple[Town, Standin]]:
    with planning_services(store, settings, script, town_class, fleet) as (town, standin, _gateway):
        yield town, standin
