"""``traced(storage)``: a span per storage call when OpenTelemetry is installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from ruv_swarm_persistence import TaskModel
from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.errors import ValidationError
from ruv_swarm_persistence.storage import Storage
from ruv_swarm_persistence.tracing import TRACED_METHODS, traced
from tests.dashboard.conftest import client_of, make_app


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_each_call_is_a_span_named_after_the_method(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    storage = traced(MemoryStorage(), tracer_provider=provider)
    async with storage:
        await storage.store_task(TaskModel.new("build", id="t1"))
        assert (await storage.get_task("t1")) is not None
        with pytest.raises(ValidationError):
            await storage.get_task("")
        async with storage.transaction() as tx:
            await tx.store_task(TaskModel.new("build", id="t2"))
    finished = exporter.get_finished_spans()
    names = [s.name for s in finished]
    assert names[:3] == ["store_task", "get_task", "get_task"]
    assert {"begin_transaction", "commit"} <= set(names)
    assert names.count("store_task") == 2  # the one inside the transaction too
    first = finished[0]
    assert first.attributes == {"db.system.name": "memory", "db.operation.name": "store_task"}
    failed = finished[2]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"


def test_every_public_coroutine_method_is_traced() -> None:
    assert {"claim_next_task", "store_event", "query", "aggregate_metrics", "commit"} <= (
        TRACED_METHODS
    )
    assert "subscribe" not in TRACED_METHODS  # an endless iterator, not one call


async def test_the_dashboard_s_reads_show_in_the_trace(
    spans: tuple[TracerProvider, InMemorySpanExporter], storage: Storage
) -> None:
    provider, exporter = spans
    async with client_of(make_app(traced(storage, tracer_provider=provider))) as client:
        assert (await client.get("/api/overview")).status_code == 200
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"list_agents", "query", "get_ready_tasks"} <= names
