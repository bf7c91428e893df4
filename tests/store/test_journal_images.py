"""The journal's after-images: text, numbers and bytes come back exactly through a journal line and its replay,
whether the capture trigger made the image (rows of text, integers and REALs) or the drain read the row (a BLOB
in it, or a REAL whose 17-digit text would not read back the same); a connection re-arms its capture when
another process changes the schema."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import struct
from pathlib import Path

from gastown_mcp.store import journal as jr
from gastown_mcp.store.db import Database

ROWS = "SELECT rowid, * FROM things ORDER BY rowid"
PRICES = "SELECT rowid, * FROM prices ORDER BY rowid"


def _pair() -> tuple[sqlite3.Connection, sqlite3.Connection]:
    source, target = (
        sqlite3.connect(":memory:", isolation_level=None),
        sqlite3.connect(":memory:", isolation_level=None),
    )
    for conn in (source, target):
        conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT, raw BLOB, n INTEGER, score NUMERIC)")
        conn.execute("CREATE TABLE prices (id INTEGER PRIMARY KEY, name TEXT, cost REAL)")
    source.execute("BEGIN")
    jr.arm(source, jr.capture_sql(source))  # its own transaction: a rollback would take the arming with it
    source.execute("COMMIT")
    source.execute("BEGIN")
    return source, target


def _replay(target: sqlite3.Connection, line: bytes) -> None:
    target.execute("BEGIN")
    jr.apply(target, json.loads(line)["changes"])
    target.execute("COMMIT")


def test_after_images_with_and_without_bytes_replay_to_the_same_rows() -> None:
    source, target = _pair()
    source.execute("INSERT INTO things (name, raw, score) VALUES ('plain', NULL, 2), ('binary', x'00ff10', 0.1)")
    source.execute("INSERT INTO things (name, n) VALUES ('gone', 3)")
    source.execute("DELETE FROM things WHERE name = 'gone'")
    source.execute("INSERT INTO prices (name, cost) VALUES ('whole', 3), ('tenth', 0.1), ('tiny', 1e-9)")
    changes = jr.drain(source)
    source.execute("COMMIT")
    assert source.execute(f"SELECT count(*) FROM temp.{jr.CAPTURE}").fetchone()[0] == 0
    assert [(t, rid, row is None) for t, rid, row in changes] == [
        ("prices", 1, False),
        ("prices", 2, False),
        ("prices", 3, False),
        ("things", 1, False),
        ("things", 2, False),
        ("things", 3, True),
    ]
    # Imaged by the trigger: rows of text, integers and REALs (17 digits). A row with bytes is read back at drain
    # time, exactly.
    assert [type(row) for _, _, row in changes[:5]] == [jr.Image, jr.Image, jr.Image, jr.Image, dict]
    assert json.loads(changes[0][2]) == {"id": 1, "name": "whole", "cost": 3.0}
    assert json.loads(changes[2][2]) == {"id": 3, "name": "tiny", "cost": 1e-9}
    assert changes[4][2] == {"id": 2, "name": "binary", "raw": {"$b64": "AP8Q"}, "n": None, "score": 0.1}
    line = jr.encode(7, "2026-01-01T00:00:00.000000Z", changes)
    assert json.loads(line) == {
        "seq": 7,
        "at": "2026-01-01T00:00:00.000000Z",
        "changes": [[t, rid, json.loads(row) if isinstance(row, jr.Image) else row] for t, rid, row in changes],
    }
    _replay(target, line)
    assert target.execute(ROWS).fetchall() == source.execute(ROWS).fetchall() == [
        (1, 1, "plain", None, None, 2), (2, 2, "binary", b"\x00\xff\x10", None, 0.1),
    ]  # fmt: skip
    assert target.execute(PRICES).fetchall() == source.execute(PRICES).fetchall()
    assert [type(r[3]) for r in target.execute(PRICES)] == [float, float, float]


def test_images_made_by_the_trigger_are_the_rows_exactly() -> None:
    source, target = _pair()
    awkward = ['quote " and \\ back', "é ü 中 \U0001f600", '{"looks": ["like", "json"]}', "new\nline\ttab\x01", ""]
    source.executemany("INSERT INTO things (name, n) VALUES (?, ?)", [(t, 2**62 + i) for i, t in enumerate(awkward)])
    source.execute("INSERT INTO things (name, n) VALUES ('moved', -7)")
    source.execute("UPDATE things SET id = 100 WHERE name = 'moved'")  # a new rowid: the old one is a deletion
    source.execute("UPDATE things SET n = n + 1 WHERE id = 1")  # touched twice: the last image counts
    source.execute("INSERT INTO things (name) VALUES ('short-lived')")
    source.execute("DELETE FROM things WHERE name = 'short-lived'")
    changes = jr.drain(source)
    source.execute("COMMIT")
    images = [row for _, _, row in changes if isinstance(row, jr.Image)]
    assert len(images) == 6  # every row of text and integers, the moved one included
    by_rid = {rid: row for _, rid, row in changes}
    assert by_rid[6] is None and by_rid[101] is None  # the moved row's old rowid and the deleted row
    names = [d[0] for d in source.execute("SELECT * FROM things").description]
    for rid, row in by_rid.items():
        if row is not None:
            values = source.execute("SELECT * FROM things WHERE rowid = ?", (rid,)).fetchone()
            assert json.loads(row) == dict(zip(names, values, strict=True))
    _replay(target, jr.encode(1, "2026-01-01T00:00:00.000000Z", changes))
    assert target.execute(ROWS).fetchall() == source.execute(ROWS).fetchall()


def test_reals_come_back_as_the_same_doubles_imaged_or_read_back() -> None:
    """Every REAL reaches the replay as the very same double: those whose 17-digit text SQLite reads back equal
    (within 1e-200..1e200) in the trigger's image, the rest (huge, tiny, or text SQLite rounds wrong) read back."""
    source, target = _pair()
    rng = random.Random(20)
    values = [0.1, 1 / 3, 2.0, -0.0, 0.00566625, 1e-9, 123456789.123456789, 5e-324, 1.7976931348623157e308]
    values += [1.1933094367773898e201, -1.0405030370667316e239]  # SQLite 3.40's printf rounds these wrong
    values += [rng.uniform(-1, 1) * 10 ** rng.uniform(-12, 12) for _ in range(300)]
    values += [v for v in (struct.unpack("<d", rng.randbytes(8))[0] for _ in range(300)) if math.isfinite(v)]
    source.executemany("INSERT INTO prices (name, cost) VALUES ('p', ?)", [(v,) for v in values])
    source.execute("INSERT INTO things (name, score) VALUES ('r', 0.30000000000000004)")
    source.execute("INSERT INTO things (name, n) VALUES (x'0102', 2.5)")  # bytes in TEXT, a REAL in INTEGER
    changes = jr.drain(source)
    source.execute("COMMIT")
    kinds = {type(row) for _, _, row in changes}
    assert kinds == {jr.Image, dict}  # both ways were taken
    _replay(target, jr.encode(3, "2026-01-01T00:00:00.000000Z", changes))
    bits = [[struct.pack("<d", r[3]) for r in conn.execute(PRICES)] for conn in (source, target)]
    assert bits[0] == bits[1] and len(bits[1]) == len(values)
    assert [r[3] for r in target.execute(PRICES)] == values  # -0.0 == 0.0: SQLite keeps no sign of zero
    assert target.execute(ROWS).fetchall() == source.execute(ROWS).fetchall()
    assert target.execute("SELECT name, n FROM things WHERE rowid = 2").fetchone() == (b"\x01\x02", 2.5)


def test_a_row_deleted_then_made_again_in_one_write_ends_as_made() -> None:
    """A deletion is noted as such (nothing is read back for it); a later insert of the same rowid in the same
    transaction replaces that note with its image, and a later deletion of an inserted row wins likewise."""
    source, target = _pair()
    target.execute("INSERT INTO things (id, name) VALUES (1, 'old'), (2, 'kept')")
    source.execute("INSERT INTO things (id, name) VALUES (1, 'old'), (2, 'kept')")
    source.execute("COMMIT")
    source.execute("BEGIN")
    jr.drain(source)
    source.execute("DELETE FROM things WHERE id = 1")
    source.execute("INSERT INTO things (id, name) VALUES (1, 'new')")
    source.execute("INSERT INTO things (id, name) VALUES (3, 'brief')")
    source.execute("DELETE FROM things WHERE id IN (2, 3)")
    changes = jr.drain(source)
    source.execute("COMMIT")
    assert [(t, rid, None if row is None else json.loads(row)["name"]) for t, rid, row in changes] == [
        ("things", 1, "new"), ("things", 2, None), ("things", 3, None),
    ]  # fmt: skip
    _replay(target, jr.encode(2, "2026-01-01T00:00:00.000000Z", changes))
    assert target.execute(ROWS).fetchall() == source.execute(ROWS).fetchall() == [(1, 1, "new", None, None, None)]


def test_a_rolled_back_write_leaves_nothing_to_drain() -> None:
    source, _ = _pair()
    source.execute("INSERT INTO things (name) VALUES ('never')")
    source.execute("ROLLBACK")
    source.execute("BEGIN")
    assert jr.drain(source) == []
    source.execute("COMMIT")


def test_a_first_write_that_rolls_back_does_not_leave_the_connection_unarmed(tmp_path: Path) -> None:
    db = Database(tmp_path / "town.db", tmp_path / "events.jsonl")
    try:
        try:
            with db.write() as tx:  # the first write on this connection arms it, then fails
                tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
                raise RuntimeError("the body failed")
        except RuntimeError:
            pass
        with db.write() as tx:
            tx.execute("INSERT INTO meta (key, value) VALUES ('b', '2')")
        assert [r["changes"] for r in jr.read(tmp_path / "events.jsonl")][-1] == [
            ["meta", 1, {"key": "b", "value": "2"}]
        ]
    finally:
        db.close()


def test_a_connection_rearms_its_capture_after_another_changes_the_schema(tmp_path: Path) -> None:
    db = Database(tmp_path / "town.db", tmp_path / "events.jsonl")
    try:
        with db.write() as tx:
            tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
        other = sqlite3.connect(tmp_path / "town.db", isolation_level=None)
        other.execute("ALTER TABLE meta ADD COLUMN extra TEXT NOT NULL DEFAULT 'x'")  # another process migrates
        other.close()
        with db.write() as tx:
            tx.execute("UPDATE meta SET value = '2', extra = 'set' WHERE key = 'a'")
        last = list(jr.read(tmp_path / "events.jsonl"))[-1]
        assert last["changes"][0][2] == {"key": "a", "value": "2", "extra": "set"}
    finally:
        db.close()
