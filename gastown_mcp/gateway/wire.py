"""What crosses the wire: which headers pass each way, and Anthropic-format error bodies.

Client credentials are stripped before a request goes upstream (the provider key is added by the proxy);
hop-by-hop headers are dropped both ways; `anthropic-version`, `anthropic-beta` and the rest pass through.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

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
