"""The journal's after-images: text, numbers and bytes come back exactly through a journal line and its replay."""

from __future__ import annotations

import json
import sqlite3

from gastown_mcp.store import journal as jr


def test_after_images_with_and_without_bytes_replay_to_the_same_rows() -> None:
    source, target = (
        sqlite3.connect(":memory:", isolation_level=None),
        sqlite3.connect(":memory:", isolation_level=None),
    )
    for conn in (source, target):
        conn.execute(
            f"CREATE TABLE {jr.CHANGES} (tbl TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tbl, rid)) WITHOUT ROWID"
        )
        conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT, cost REAL, raw BLOB)")
    jr.install_capture(source)
    source.execute("BEGIN")
    source.execute("INSERT INTO things (name, cost, raw) VALUES ('plain', 0.1, NULL), ('binary', 1e-9, x'00ff10')")
    source.execute("INSERT INTO things (name, cost) VALUES ('gone', 3)")
    source.execute("DELETE FROM things WHERE name = 'gone'")
    changes = jr.drain(source)
    source.execute("COMMIT")
    assert source.execute(f"SELECT count(*) FROM {jr.CHANGES}").fetchone()[0] == 0
    assert [(t, rid, row is None) for t, rid, row in changes] == [
        ("things", 1, False),
        ("things", 2, False),
        ("things", 3, True),
    ]
    assert changes[0][2] == {"id": 1, "name": "plain", "cost": 0.1, "raw": None}
    assert changes[1][2] == {"id": 2, "name": "binary", "cost": 1e-9, "raw": {"$b64": "AP8Q"}}
    line = jr.encode(7, "2026-01-01T00:00:00.000000Z", changes)
    assert (
        line
        == (
            json.dumps({"seq": 7, "at": "2026-01-01T00:00:00.000000Z", "changes": changes}, separators=(",", ":"))
            + "\n"
        ).encode()
    )
    target.execute("BEGIN")
    jr.apply(target, json.loads(line)["changes"])
    target.execute("COMMIT")
    rows = "SELECT rowid, id, name, cost, raw FROM things ORDER BY rowid"
    assert target.execute(rows).fetchall() == source.execute(rows).fetchall() == [
        (1, 1, "plain", 0.1, None), (2, 2, "binary", 1e-9, b"\x00\xff\x10"),
    ]  # fmt: skip
