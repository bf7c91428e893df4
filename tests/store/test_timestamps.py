"""`now_iso` (each second's text formatted once) writes exactly what datetime's strftime writes, rounding included."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from gastown_mcp.models import now_iso


def _reference(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_now_iso_matches_datetime_to_the_microsecond_including_the_roundings() -> None:
    rng = random.Random(20)
    edges = [0.0, 1.5, 59.9999995, 59.9999994, 1_700_000_000.0000005, 1_700_000_000.0000015, 1_799_999_999.9999996]
    stamps = edges + [rng.uniform(0, 4e9) for _ in range(20_000)]
    stamps += [round(s, 6) + d for s in stamps[:2_000] for d in (5e-7, -5e-7)]
    assert [now_iso(s) for s in stamps] == [_reference(s) for s in stamps]
    assert now_iso() < now_iso(datetime.now(UTC).timestamp() + 1)
