"""A provider key in a streamed reply is redacted however the stream is cut, and nothing else is held back."""

from __future__ import annotations

from gastown_mcp.gateway.wire import REDACTED, StreamRedactor

KEY = "sk-ant-PROVIDER-SENTINEL-0123456789abcdef"


def _through(stream: bytes, cuts: list[int]) -> tuple[bytes, list[bytes]]:
    redactor, out, last = StreamRedactor([KEY, "short"]), [], 0
    for cut in [*cuts, len(stream)]:
        out.append(redactor.feed(stream[last:cut]))
        last = cut
    return b"".join(out) + redactor.flush(), out


def test_a_key_cut_anywhere_is_redacted_and_a_chunk_that_cannot_start_a_key_goes_out_whole() -> None:
    stream = f'data: {{"text": "echo {KEY} and s"}}\n\ndata: {{"text": "sk-ant-PROV, {KEY}"}}\n\n'.encode()
    expected = stream.replace(KEY.encode(), REDACTED)
    for cut in range(1, len(stream)):
        whole, _ = _through(stream, [cut])
        assert whole == expected
    whole, parts = _through(stream, list(range(1, len(stream))))  # one byte at a time
    assert whole == expected and KEY.encode() not in b"".join(parts)
    events = stream.split(b"\n\n")
    _, parts = _through(stream, [len(events[0]) + 2])  # cut after the first event: it goes out as it came
    assert parts[0] == events[0].replace(KEY.encode(), REDACTED) + b"\n\n"
    assert StreamRedactor(["short"]).feed(b"short") == b"short"  # too short to be a secret: untouched
