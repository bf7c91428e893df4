"""The town's one clock format: UTC timestamps as fixed-width ISO strings (standard library only, so the store
can open a database without loading the models)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

_SECONDS: dict[int, str] = {}  # whole second -> its "%Y-%m-%dT%H:%M:%S" text: stamps come many to a second


def now_iso(at: float | None = None) -> str:
    """UTC timestamps as fixed-width ISO strings, so text order is time order. The same text as
    `datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")` (microseconds rounded half to even),
    with each second's text formatted once."""
    frac, whole = math.modf(time.time() if at is None else at)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second = int(whole)
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) >= 64:
            _SECONDS.clear()
        text = _SECONDS[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{micros:06d}Z"
