"""The stand-in's HTTP face: Messages API endpoints (JSON and SSE) that answer from a script.

`build_standin(script)` returns a `Standin` holding the Starlette app and a record of every request, so
tests can assert what reached "the model". Every response names itself: model `scripted-standin`,
header `server: gastown-scripted-standin`.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gastown_mcp.standin.conversation import Conversation, Text, Tokens, ToolCall, Turn, count_tokens
from gastown_mcp.standin.scripts import Script, ScriptedError

MODEL_ID = "scripted-standin"
SERVER_HEADER = "gastown-scripted-standin"


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    stream: bool
    status: int = 200
    usage: dict[str, int] | None = None


@dataclass
class Standin:
    """One stand-in server: its app, its script and what it has been asked."""

    script: Script
    expected_key: str | None = None
    chunk_chars: int = 24
    requests: list[RecordedRequest] = field(default_factory=list)
    tokens: Tokens = field(default_factory=Tokens)
    lock: threading.Lock = field(default_factory=threading.Lock)
    app: Starlette = field(init=False)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/_standin/requests", self._recorded, methods=["GET", "DELETE"]),
            ]
        )

    # -- endpoints ---------------------------------------------------------------------------------
    async def _messages(self, request: Request) -> Response:
        body, error = await self._admit(request)
        if error is not None:
            return error
        stream = bool(body.get("stream"))
        rec = RecordedRequest(request.url.path, _headers(request), body, stream)
        self.requests.append(rec)
        try:
            turn = self.script.next_turn(Conversation(body))
        except ScriptedError as exc:
            rec.status = exc.status
            return error_response(exc.status, exc.error_type, exc.message)
        with self.lock:
            usage = self.tokens.input_usage(body)
        usage["output_tokens"] = _output_tokens(turn)
        rec.usage = dict(usage)
        msg_id = "msg_standin_" + secrets.token_hex(12)
        headers = {"server": SERVER_HEADER, "request-id": "req_standin_" + secrets.token_hex(8)}
        if stream:
            return StreamingResponse(
                _sse(msg_id, turn, usage, self.chunk_chars), media_type="text/event-stream", headers=headers
            )
        return JSONResponse(_message(msg_id, turn, usage), headers=headers)

    async def _count_tokens(self, request: Request) -> Response:
        body, error = await self._admit(request)
        if error is not None:
            return error
        self.requests.append(RecordedRequest(request.url.path, _headers(request), body, False))
        return JSONResponse({"input_tokens": self.tokens.input_total(body)}, headers={"server": SERVER_HEADER})

    async def _recorded(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
        return JSONResponse([r.__dict__ for r in self.requests])

    async def _admit(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        if self.expected_key is not None:
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "")[7:]
            if not secrets.compare_digest(given.encode(), self.expected_key.encode()):
                return {}, error_response(401, "authentication_error", "invalid x-api-key (scripted stand-in)")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return {}, error_response(400, "invalid_request_error", "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return {}, error_response(400, "invalid_request_error", "messages: field required")
        return body, None


def build_standin(script: Script, expected_key: str | None = None, chunk_chars: int = 24) -> Standin:
    return Standin(script=script, expected_key=expected_key, chunk_chars=chunk_chars)


def error_response(status: int, error_type: str, message: str) -> JSONResponse:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status, headers={"server": SERVER_HEADER})


def _headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _output_tokens(turn: Turn) -> int:
    total = 0
    for b in turn.blocks:
        total += count_tokens(b.text) if isinstance(b, Text) else count_tokens(b.input) + count_tokens(b.name)
    return max(total, 1)


def _block(b: Text | ToolCall) -> dict[str, Any]:
    if isinstance(b, Text):
        return {"type": "text", "text": b.text}
    return {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}


def _message(msg_id: str, turn: Turn, usage: dict[str, int] | None, content: bool = True) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": MODEL_ID,
        "content": [_block(b) for b in turn.blocks] if content else [],
        "stop_reason": turn.resolved_stop_reason if content else None,
        "stop_sequence": None,
        "usage": usage,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def _sse(msg_id: str, turn: Turn, usage: dict[str, int], chunk: int) -> AsyncIterator[bytes]:
    start_usage = {**usage, "output_tokens": 1}
    yield _event("message_start", {"type": "message_start", "message": _message(msg_id, turn, start_usage, False)})
    yield _event("ping", {"type": "ping"})
    for i, b in enumerate(turn.blocks):
        if isinstance(b, Text):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(b.text, chunk)]
        else:
            start = {"type": "tool_use", "id": b.id, "name": b.name, "input": {}}
            raw = json.dumps(b.input)
            deltas = [{"type": "input_json_delta", "partial_json": c} for c in _chunks(raw, chunk * 2)]
        yield _event("content_block_start", {"type": "content_block_start", "index": i, "content_block": start})
        for d in deltas:
            yield _event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": i})
    yield _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": turn.resolved_stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield _event("message_stop", {"type": "message_stop"})
