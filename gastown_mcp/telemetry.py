"""OpenTelemetry export: one trace per bead run, sent over OTLP/HTTP when `[otel] endpoint` is set.

A bead run is a bead worked by the agent that claimed it (a polecat claims one bead; a bead given back goes to
a fresh polecat, a new run). The run's trace id and the id of its root span (`bead.run`) are derived from the
bead id and that agent's name, so the town (claim, complete), the MCP server (tool calls), the gateway (model
calls) and the merge queue (landing) each add spans to the same trace without any context passing through
agents or between processes. With no endpoint nothing here is imported or called: `build_tracing` gives None.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from typing import Any

from gastown_mcp.config import OtelSection
from gastown_mcp.errors import InvalidInput

RUN_SALT = b"gastown-bead-run"
Attrs = Mapping[str, Any]


def run_ids(bead_id: str, agent: str) -> tuple[int, int]:
    """The trace id and root span id of the run of `bead_id` by `agent`: the same in every process."""
    digest = hashlib.sha256(b"\0".join((RUN_SALT, bead_id.encode(), agent.encode()))).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def now_ns() -> int:
    return time.time_ns()


class Tracing:
    """A tracer provider with a batching OTLP/HTTP exporter; spans are queued and sent off the caller's thread."""

    def __init__(self, cfg: OtelSection, *, schedule_delay_ms: int = 1000) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        except ImportError as exc:
            raise InvalidInput(
                f"[otel] endpoint is set but the OpenTelemetry SDK is not installed ({exc.name}): install it with "
                "`pip install 'gastown_mcp[otel]'`, or remove [otel] endpoint from town.toml"
            ) from exc
        assert cfg.endpoint is not None
        pinned = threading.local()  # (trace id, span id) the next span must have: a run's root span

        class RunIds(RandomIdGenerator):
            def generate_trace_id(self) -> int:
                ids = getattr(pinned, "ids", None)
                return ids[0] if ids else super().generate_trace_id()

            def generate_span_id(self) -> int:
                ids = getattr(pinned, "ids", None)
                return ids[1] if ids else super().generate_span_id()

        self._trace, self._pinned = trace, pinned
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}), id_generator=RunIds()
        )
        exporter = OTLPSpanExporter(endpoint=cfg.endpoint.rstrip("/") + "/v1/traces", timeout=cfg.timeout_seconds)
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms))
        self._tracer = self._provider.get_tracer("gastown_mcp")

    def _run_context(self, bead_id: str, agent: str) -> Any:
        trace_id, root = run_ids(bead_id, agent)
        parent = self._trace.SpanContext(
            trace_id, root, is_remote=True, trace_flags=self._trace.TraceFlags(self._trace.TraceFlags.SAMPLED)
        )
        return self._trace.set_span_in_context(self._trace.NonRecordingSpan(parent))

    def span(
        self,
        name: str,
        bead_id: str | None,
        agent: str,
        start_ns: int,
        end_ns: int,
        attrs: Attrs,
        *,
        error: str | None = None,
    ) -> None:
        """A finished span in the run of `bead_id` by `agent` (a trace of its own when there is no bead)."""
        context = self._run_context(bead_id, agent) if bead_id else None
        span = self._tracer.start_span(name, context=context, start_time=start_ns, attributes=dict(attrs))
        if error is not None:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        span.end(end_time=max(end_ns, start_ns))

    def run(self, bead_id: str, agent: str, start_ns: int, end_ns: int, attrs: Attrs) -> None:
        """The run's root span (`bead.run`), with the ids every other span of the run names as its parent."""
        self._pinned.ids = run_ids(bead_id, agent)
        try:
            span = self._tracer.start_span("bead.run", context=None, start_time=start_ns, attributes=dict(attrs))
        finally:
            self._pinned.ids = None
        span.end(end_time=max(end_ns, start_ns))

    def flush(self, timeout_ms: int = 5000) -> bool:
        """Send what is queued now; True when it all went."""
        return bool(self._provider.force_flush(timeout_ms))

    def close(self) -> None:
        self._provider.shutdown()


def build_tracing(cfg: OtelSection) -> Tracing | None:
    """The town's tracer, or None (export off: nothing imported, nothing done) when no endpoint is set."""
    return Tracing(cfg) if cfg.endpoint else None
