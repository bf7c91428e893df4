"""The town's one clock format: UTC timestamps as fixed-width ISO strings (standard library only, so the store
can open a database without loading the models)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_iso(at: float | None = None) -> str:
    """UTC timestamps as fixed-width ISO strings, so text order is time order."""
    dt = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
