"""The end-to-end tests use the engine, image and root fixtures of tests/conftest.py; every one of them needs
root, for the town network's host firewall."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _needs_root(root: None) -> None:
    return None
