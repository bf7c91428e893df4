"""Nothing in the store grows without bound: connections of retired threads, exited agents in the hot table,
usage rows past their retention, events and the journal once a backup covers them, and status counts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from gastown_mcp.store import Store


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _churn(store: Store, threads: int) -> None:
    """Each thread reads once and ends, as the worker threads anyio retires do."""

    def work() -> None:
        store.db.query("SELECT count(*) FROM beads")

    for _ in range(threads):
        t = threading.Thread(target=work)
        t.start()
        t.join()


def test_connections_and_fds_stay_bounded_after_many_thread_churns(store: Store) -> None:
    _churn(store, 20)
    conns, fds = store.db.connections(), _fds()
    for _ in range(5):
        _churn(store, 40)
    assert store.db.connections() <= conns
    assert _fds() <= fds


def test_a_retired_threads_connection_is_reused_not_left_open(store: Store, tmp_path: Path) -> None:
    before = store.db.connections()
    barrier = threading.Barrier(4)

    def work() -> None:
        store.db.query("SELECT 1")
        barrier.wait()  # four threads at once really need four connections

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    grown = store.db.connections()
    assert grown >= before + 3
    _churn(store, 30)
    assert store.db.connections() == grown
