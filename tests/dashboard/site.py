"""What the dashboard tests share: a town that fails every read on demand, and the served dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx2
from fakes import FakeRuntime

from gastown_mcp.errors import StoreError
from gastown_mcp.models import Agent
from gastown_mcp.town import Town


class FlakyTown(Town):
    """A town whose every checked call fails while `broken` is set, as a database that cannot be read does."""

    broken = False

    def _require(self, actor: Agent, action: str, what: str) -> None:
        if self.broken:
            raise StoreError("database read failed: disk I/O error; retry (forced by the test)")
        super()._require(actor, action, what)


@dataclass
class Site:
    url: str
    town: FlakyTown
    runtime: FakeRuntime
    token: str

    def client(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, follow_redirects=False, timeout=10)

    def login(self) -> httpx2.Client:
        c = self.client()
        r = c.post("/login", data={"token": self.token, "next": "/"})
        assert r.status_code == 303, r.text
        return c


def docs_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "docs"
