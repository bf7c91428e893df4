"""Gateway settings: upstreams (base URL + which provider-key variable), routes, prices, limits.

The town maps `town.toml`'s `[gateway]` section onto `GatewayConfig`; provider keys are never in here,
only the names of the environment variables the edge reads them from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gastown_mcp.budget import Price


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Upstream(_Model):
    """Somewhere that serves the Messages API: Anthropic, Ollama, llama.cpp, or the stand-in."""

    base_url: str = Field(description="e.g. https://api.anthropic.com or http://127.0.0.1:11434")
    key_env: str | None = Field(
        default="ANTHROPIC_API_KEY", description="environment variable holding this upstream's key; None = no key"
    )
    auth: Literal["x-api-key", "bearer"] = "x-api-key"


class RouteRule(_Model):
    """Send requests from agents matching `agent` for models matching `model` (globs) to `upstream`."""

    agent: str = "*"
    model: str = "*"
    upstream: str


class GatewayConfig(_Model):
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
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    stale_reservation_seconds: float = Field(default=3600.0, gt=0)
