"""OpenTelemetry export: a bead run is one trace, sent over OTLP/HTTP to a collector this test starts on loopback.

The collector is a small OTLP/HTTP receiver (stdlib HTTP server) that decodes each export with the protobuf
classes of `opentelemetry-proto` and records the spans. The run goes through the real parts: the polecat's MCP
calls through the SDK's client, its model call with the real `anthropic` client through the gateway to the
stand-in, its commit in real git, and the merge queue landing it on `main`.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import anyio
import pytest
from conftest import add_sample_rig
from mcp import Client
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb2

from gastown_mcp import rigs
from gastown_mcp.config import (
    DashboardSection,
    GatewaySection,
    OtelSection,
    RigSection,
    ServerSection,
    Settings,
    Upstream,
)
from gastown_mcp.errors import InvalidInput
from gastown_mcp.gateway import build_gateway
from gastown_mcp.models import Agent, AgentState
from gastown_mcp.server import build_server
from gastown_mcp.serving import serve
from gastown_mcp.standin import Hello, build_standin
from gastown_mcp.store import Store
from gastown_mcp.supervisor.merge_queue import MergeQueue
from gastown_mcp.telemetry import Tracing, build_tracing, run_ids
from gastown_mcp.town import Town, operator

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c", "safe.directory=*"]
KEY = "sk-ant-standin-key"


@dataclass
class Span:
    name: str
    trace_id: int
    span_id: int
    parent: int
    attrs: dict[str, Any]
    error: bool
    service: str


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Collector:
    """An OTLP/HTTP receiver on 127.0.0.1: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                collector.paths.append(self.path)
                request = trace_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    res = {a.key: _value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            collector.spans.append(
                                Span(
                                    s.name,
                                    int.from_bytes(s.trace_id, "big"),
                                    int.from_bytes(s.span_id, "big"),
                                    int.from_bytes(s.parent_span_id, "big") if s.parent_span_id else 0,
                                    {a.key: _value(a.value) for a in s.attributes},
                                    s.status.code == 2,
                                    str(res.get("service.name")),
                                )
                            )
                reply = trace_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Collector:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as c:
        yield c


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def otown(store: Store, settings: Settings, collector: Collector) -> Town:
    s = settings.model_copy(
        update={"rigs": {"proj": RigSection(gates=[])}, "otel": OtelSection(endpoint=collector.url + "/")}
    )
    add_sample_rig(s.town_dir)
    return Town(store, s)


def _result(r: Any) -> dict[str, Any]:
    assert not r.is_error, r.content
    return dict(r.structured_content or {})


async def test_a_bead_run_is_one_trace_from_claim_to_merge_with_its_tokens_and_usd(
    otown: Town, operator: Agent, collector: Collector
) -> None:
    tracing = build_tracing(otown.settings.otel)
    assert tracing is not None
    traces = otown.trace_with(tracing)
    bead = otown.bead_create(operator, "add a file")
    creds = otown.agent_add(operator, "nux", "polecat", "proj")
    repo = rigs.create_agent_repo(rigs.get_rig(otown.settings.town_dir, "proj"), "nux", bead.id)
    nux = otown.set_agent_state(
        operator, "nux", AgentState.running, "spawned", worktree=str(repo.path), branch=repo.branch
    )
    standin = build_standin(Hello(), expected_key=KEY)
    async with serve(standin.app) as upstream:
        gw_settings = GatewaySection(upstreams={"standin": Upstream(base_url=upstream)}, default_upstream="standin")
        gw_town = Town(otown._store, otown.settings.model_copy(update={"gateway": gw_settings}))
        gateway = build_gateway(gw_town, {"ANTHROPIC_API_KEY": KEY}, on_settled=traces.model_call)
        async with serve(gateway) as gw_url, Client(build_server(otown, nux)) as mcp:
            assert _result(await mcp.call_tool("bead_claim", {"id": bead.id}))["id"] == bead.id
            model = anthropic.AsyncAnthropic(base_url=gw_url, api_key=creds.gateway_key)
            await model.messages.create(
                model="scripted-standin", max_tokens=100, messages=[{"role": "user", "content": "work"}]
            )
            _result(await mcp.call_tool("bead_show", {"id": bead.id}))
            (repo.path / "a.txt").write_text("a\n")
            git(repo.path, "add", "a.txt")
            git(repo.path, "commit", "-qm", "add a")
            _result(await mcp.call_tool("bead_complete", {"id": bead.id, "summary": "added a"}))
    [step] = MergeQueue(otown).tick()
    assert step.verb == "merge.merged"
    assert tracing.flush()

    trace_id, root_id = run_ids(bead.id, "nux")
    run = [s for s in collector.spans if s.trace_id == trace_id]
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    names = sorted(s.name for s in run)
    assert names == sorted(
        [
            "bead.claim",
            "tool bead_claim",
            "model.call",
            "tool bead_show",
            "bead.complete",
            "tool bead_complete",
            "merge.land",
            "bead.run",
        ]
    )
    [root] = [s for s in run if s.name == "bead.run"]
    assert (root.span_id, root.parent) == (root_id, 0)
    assert all(s.parent == root_id for s in run if s is not root)
    assert all(s.attrs["gastown.bead_id"] == bead.id and s.attrs["gastown.agent"] == "nux" for s in run)
    assert all(s.service == "gastown" and not s.error for s in run)
    [call] = [s for s in run if s.name == "model.call"]
    [usage] = otown._store.db.query("SELECT * FROM usage")
    tokens = usage["input_tokens"] + usage["output_tokens"] + usage["cache_creation_tokens"]
    tokens += usage["cache_read_tokens"]
    assert tokens > 0 and usage["cost_usd"] > 0
    assert call.attrs["gastown.tokens"] == tokens and call.attrs["gastown.cost_usd"] == pytest.approx(usage["cost_usd"])
    assert call.attrs["gastown.rig"] == "proj" and call.attrs["gen_ai.request.model"] == "scripted-standin"
    assert root.attrs["gastown.tokens"] == tokens and root.attrs["gastown.cost_usd"] == pytest.approx(usage["cost_usd"])
    assert root.attrs["gastown.outcome"] == "merged" and root.attrs["gastown.model_requests"] == 1
    [land] = [s for s in run if s.name == "merge.land"]
    assert land.attrs["gastown.commit"] == otown.merge_main(operator, "proj")
    assert len(collector.spans) == len(run)  # nothing outside the run: all of it, spend included, is on its trace


def test_the_trace_of_a_run_is_the_same_in_every_process_and_differs_between_runs() -> None:
    assert run_ids("gt-1a", "nux") == run_ids("gt-1a", "nux")
    assert len({run_ids("gt-1a", "nux"), run_ids("gt-1a", "slit"), run_ids("gt-1b", "nux")}) == 3
    trace_id, span_id = run_ids("gt-1a", "nux")
    assert 0 < trace_id < 2**128 and 0 < span_id < 2**64


def test_export_is_off_by_default_and_a_bad_endpoint_says_what_to_write(settings: Settings, town: Town) -> None:
    assert settings.otel.endpoint is None and build_tracing(settings.otel) is None
    assert town.traces is None  # every hook is one attribute test
    with pytest.raises(ValueError, match=r"not an http\(s\) URL.*127\.0\.0\.1:4318"):
        OtelSection(endpoint="127.0.0.1:4318")


def test_a_town_toml_with_an_otel_endpoint_builds_a_tracer(tmp_path: Path, collector: Collector) -> None:
    from gastown_mcp.config import load_settings

    (tmp_path / "town.toml").write_text(f'[otel]\nendpoint = "{collector.url}"\nservice_name = "town-a"\n')
    tracing = build_tracing(load_settings(tmp_path, env={}).otel)
    assert isinstance(tracing, Tracing)
    tracing.span("probe", None, "nux", 1, 2, {"k": 1})
    assert tracing.flush()
    tracing.close()
    [span] = collector.spans
    assert (span.name, span.service, span.parent) == ("probe", "town-a", 0)
    with pytest.raises(InvalidInput, match=r"\[otel\] endpoint 'collector:4318' is not an http"):
        (tmp_path / "town.toml").write_text('[otel]\nendpoint = "collector:4318"\n')
        load_settings(tmp_path, env={})


def test_gastown_up_with_an_otel_endpoint_traces_the_claim_and_the_model_call_of_a_run(
    settings: Settings, collector: Collector
) -> None:
    from dashboard.test_up import up

    from gastown_mcp.server.client import connect_http
    from gastown_mcp.serving import serve_in_thread

    op = operator()
    with serve_in_thread(build_standin(Hello()).app) as upstream:
        gateway = GatewaySection.model_validate(
            {"port": 0, "upstreams": {"standin": {"base_url": upstream, "key_env": ""}}, "default_upstream": "standin"}
        )
        s = settings.model_copy(
            update={
                "server": ServerSection(port=0),
                "gateway": gateway,
                "dashboard": DashboardSection(enabled=False),
                "otel": OtelSection(endpoint=collector.url),
            }
        )
        store = Store(s)
        town = Town(store, s)
        creds = town.agent_add(op, "nux", "polecat")
        bead = town.bead_create(op, "traced")
        store.close()

        async def claim(url: str) -> None:
            async with connect_http(url, creds.token) as mcp:
                assert _result(await mcp.call_tool("bead_claim", {"id": bead.id}))["id"] == bead.id

        with up(s) as state:
            anyio.run(claim, state.mcp_url)
            model = anthropic.Anthropic(base_url=state.gateway_url, api_key=creds.gateway_key)
            model.messages.create(model="scripted-standin", max_tokens=50, messages=[{"role": "user", "content": "go"}])
    # Stopping the town sent what was queued.
    trace_id, root_id = run_ids(bead.id, "nux")
    run = {s.name: s for s in collector.spans if s.trace_id == trace_id}
    assert set(run) == {"bead.claim", "tool bead_claim", "model.call"}
    assert all(s.parent == root_id for s in run.values())
    assert run["model.call"].attrs["gastown.tokens"] > 0


class BrokenTracing:
    """An exporter side that fails on every span (a hand-written fake of a broken SDK)."""

    def span(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the tracer is broken (forced by the test)")

    run = span


def test_a_span_that_cannot_be_made_never_fails_the_claim_or_completion(town: Town, operator: Agent) -> None:
    from gastown_mcp.town.traces import Traces

    town.traces = Traces(BrokenTracing(), town._store)  # type: ignore[arg-type]
    creds = town.agent_add(operator, "nux", "polecat")
    bead = town.bead_create(operator, "still works")
    assert town.bead_claim(creds.agent, bead.id).assignee == "nux"
    assert town.bead_complete(creds.agent, bead.id, "done anyway").status.value == "done"


def test_a_run_that_ends_without_landing_still_gets_its_root_span_with_how_it_ended(
    otown: Town, operator: Agent, collector: Collector
) -> None:
    tracing = build_tracing(otown.settings.otel)
    assert tracing is not None
    otown.trace_with(tracing)
    nux = otown.agent_add(operator, "nux", "polecat", "proj").agent
    pip = otown.agent_add(operator, "pip", "polecat", "proj").agent
    given_back, taken_back, cancelled = (otown.bead_create(operator, t) for t in ("give back", "requeue", "drop"))
    otown.bead_claim(nux, given_back.id)
    otown.bead_release(nux, given_back.id, "cannot do it")  # the polecat gives it back
    otown.bead_claim(pip, taken_back.id)
    otown.requeue(operator, taken_back.id, "pip went silent")  # the witness takes it back
    otown.bead_claim(nux, cancelled.id)
    otown.bead_update(operator, cancelled.id, status="cancelled", reason="not needed")
    assert tracing.flush()

    roots = {(s.attrs["gastown.bead_id"], s.attrs["gastown.agent"]): s for s in collector.spans if s.name == "bead.run"}
    expected = {
        (given_back.id, "nux"): "released",
        (taken_back.id, "pip"): "released",
        (cancelled.id, "nux"): "cancelled",
    }
    assert {key: s.attrs["gastown.outcome"] for key, s in roots.items()} == expected
    for (bead_id, agent), root in roots.items():
        assert (root.trace_id, root.span_id) == run_ids(bead_id, agent) and root.parent == 0
        assert root.attrs["gastown.rig"] == "proj" and root.attrs["gastown.model_requests"] == 0
