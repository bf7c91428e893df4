"""The meter reads the same usage from a stream however it is cut into chunks, finished or cut short."""

from __future__ import annotations

import json
import random

from gastown_mcp.gateway.meter import Meter


def _stream(finished: bool) -> bytes:
    events: list[tuple[str | None, dict[str, object]]] = [
        ("message_start", {"type": "message_start", "message": {"model": "m-1", "usage": {"input_tokens": 90}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0}),
    ]
    for text in ("Hé", "llo 😀 ", "wörld\n"):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        events.append(("content_block_delta", delta))
    events.append((None, {"type": "content_block_delta", "delta": {"partial_json": '{"a": "€"}'}}))  # no event line
    if finished:
        events += [
            ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 21, "cache_read_input_tokens": 5}}),
            ("message_stop", {"type": "message_stop"}),
        ]
    out = b""
    for i, (name, data) in enumerate(events):
        head = f"event: {name}\r\n" if name and i % 2 else f"event: {name}\n" if name else ""
        out += f"{head}data: {json.dumps(data)}\n\n".encode()
    return out


def _read(stream: bytes, cuts: list[int]) -> tuple[object, ...]:
    meter, last = Meter(), 0
    for cut in [*cuts, len(stream)]:
        meter.feed(stream[last:cut])
        last = cut
    return meter.usage(), meter.model, meter.finished


def test_usage_is_the_same_however_the_stream_is_cut() -> None:
    rng = random.Random(20)
    for finished in (True, False):
        stream = _stream(finished)
        whole = _read(stream, [])
        for _ in range(200):
            cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 30)))
            assert _read(stream, cuts) == whole
        assert _read(stream, list(range(1, len(stream)))) == whole  # one byte at a time
        usage, model, done = whole
        assert model == "m-1" and done is finished
        produced = len("Hé".encode() + "llo 😀 ".encode() + "wörld\n".encode() + '{"a": "€"}'.encode())
        expected = (21, 5) if finished else (-(-produced // 4), 0)
        assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (90, *expected)  # type: ignore[attr-defined]
