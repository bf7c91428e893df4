"""What crosses the wire: which headers pass each way, Anthropic-format errors, and provider-key redaction.

Client credentials are stripped before a request goes upstream (the provider key is added by the proxy);
hop-by-hop headers are dropped both ways; `anthropic-version`, `anthropic-beta` (once `policy` allowed it) and
the rest pass through. A provider key an upstream echoes back never reaches the client, streamed or not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping


class Refusal(Exception):
    """A request the gateway answers itself, with an Anthropic-format error."""

    def __init__(self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message
        self.headers = dict(headers or {})


# Never forwarded upstream: client credentials, hop-by-hop, and what httpx2 sets itself.
_DROP_UP = frozenset(
    {
        b"host",
        b"content-length",
        b"x-api-key",
        b"authorization",
        b"cookie",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"proxy-authorization",
        b"accept-encoding",
    }
)
# Never copied back: hop-by-hop, lengths the server recomputes, and anything credential-like.
_DROP_DOWN = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"content-encoding",
        b"set-cookie",
        b"date",
        b"server",
    }
)


def forward_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = [(k.lower(), v) for k, v in headers if k.lower() not in _DROP_UP]
    # Usage must be readable from the bytes, so ask upstream not to compress them.
    out.append((b"accept-encoding", b"identity"))
    return out


def response_headers(headers: Iterable[tuple[bytes, bytes]], length: int | None) -> list[tuple[bytes, bytes]]:
    out = [(k.lower(), v) for k, v in headers if k.lower() not in _DROP_DOWN]
    out.append((b"x-gastown-gateway", b"1"))
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    return out


def error_body(error_type: str, message: str) -> bytes:
    """Anthropic's error shape, so SDKs and Claude Code show the message as they would the API's."""
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


def sse_error(error_type: str, message: str) -> bytes:
    """An SSE `error` event, as the Messages API ends a stream that failed after it started."""
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"


REDACTED = b"[redacted]"
# Shorter "keys" are not secrets worth hiding (a local model server started with `--api-key k`), and replacing
# every occurrence of a one- or two-letter string would corrupt the JSON and SSE passing through.
MIN_SECRET_BYTES = 16


def redact(data: bytes, keys: Iterable[bytes]) -> bytes:
    for key in keys:
        if len(key) >= MIN_SECRET_BYTES and key in data:
            data = data.replace(key, REDACTED)
    return data


class StreamRedactor:
    """Redacts keys from a byte stream cut into arbitrary chunks: it holds back only the longest tail that
    could be the start of a key (at most len(key) - 1 bytes), so a key split across chunks is still caught
    and a stream whose tail cannot start a key is not delayed at all."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = [k.encode() for k in keys if len(k.encode()) >= MIN_SECRET_BYTES]
        self._in_keys = frozenset(b for k in self.keys for b in k)  # a tail can start a key only if it ends in one
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.keys:
            return chunk
        data = redact(self._tail + chunk if self._tail else chunk, self.keys)
        hold = 0
        if data and data[-1] in self._in_keys:  # an SSE chunk ends in a newline, which no key holds
            hold = max(_key_prefix_at_end(data, k) for k in self.keys)
        self._tail = data[len(data) - hold :] if hold else b""
        return data[: len(data) - hold]

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail


def _key_prefix_at_end(data: bytes, key: bytes) -> int:
    """Length of the longest proper prefix of `key` that `data` ends with."""
    start = max(0, len(data) - len(key) + 1)
    i = data.find(key[:1], start)
    while i >= 0:
        if key.startswith(data[i:]):
            return len(data) - i
        i = data.find(key[:1], i + 1)
    return 0
