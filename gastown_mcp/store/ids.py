"""Bead ids: `<prefix>-<short hash>`, growing in length with the table so they stay short and never collide."""

from __future__ import annotations

import hashlib
import math
import uuid

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
MIN_LENGTH = 4


def hash_length(count: int) -> int:
    """Shortest length at which a fresh random id collides with fewer than 1 in 1000 existing ones."""
    needed = math.log(max(count, 1) * 1000, len(ALPHABET))
    return max(MIN_LENGTH, math.ceil(needed))


def random_hash(length: int) -> str:
    n = int.from_bytes(hashlib.sha256(uuid.uuid4().bytes).digest()[:16], "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, len(ALPHABET))
        out.append(ALPHABET[r])
    return "".join(out)
