"""End-to-end: OpenTelemetry across a real worker (docs/tracing.md). The test process
traces its enqueues into the SDK's in-memory exporter; the worker, configured with the
same hook through demo.hooks.FileTracing, writes its spans to a file as JSON lines. The
run spans must be children of the enqueue span, in its trace, with the attempt's
attributes. One worker serves the module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from demo import recording, tasks
from demo.hooks import span_data
from django_bgtasks import get_task_info
from helpers import WorkerProcess, wait_until

HOOK = "django_bgtasks.contrib.opentelemetry.OpenTelemetryHook"


@pytest.fixture(scope="module")
def memory_spans() -> InMemorySpanExporter:
    """This process's finished spans (the SDK's provider installed once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="module")
def traced_worker(redis_server, tmp_path_factory):
    """One worker for the module, tracing into its spans file; yields that file."""
    folder = tmp_path_factory.mktemp("tracing")
    spans_file = folder / "spans.jsonl"
    worker = WorkerProcess(["--processes", "1", "--threads", "2"], folder / "worker.log", env={
        "BGTASKS_REDIS_URL": redis_server.url,
        "BGTASKS_TEST_CACHE_URL": getattr(redis_server, "cache_url", None) or "",
        "BGTASKS_DEMO_DB": str(folder / "worker-db.sqlite3"),
        "BGTASKS_TEST_SPANS": str(spans_file),
    }).start()
    try:
        worker.wait_for_log(" starting: Redis ")
        yield spans_file
    finally:
        worker.stop()


@pytest.fixture
def traced(settings, memory_spans, traced_worker):
    settings.BGTASKS = {**settings.BGTASKS, "HOOKS": [HOOK]}
    memory_spans.clear()
    return memory_spans


def worker_spans(path: Path, task_id: str) -> list[dict]:
    if not path.exists():
        return []
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    return [s for s in spans if s["attributes"].get("messaging.message.id") == task_id]


def enqueue_span(exporter: InMemorySpanExporter, task_id: str) -> dict:
    [span] = [span_data(s) for s in exporter.get_finished_spans()
              if s.attributes.get("messaging.message.id") == task_id]
    return span


def test_the_run_span_is_a_child_of_the_enqueue_span(traced, traced_worker):
    r = recording.client()
    task = tasks.headers_then_succeed.using(headers={"tenant": "acme"})
    task_id = task.enqueue("traced", 0).id
    sent = enqueue_span(traced, task_id)
    assert sent["name"] == "bgtasks enqueue demo.tasks.headers_then_succeed"
    assert sent["kind"] == "PRODUCER" and sent["parent_id"] is None
    assert sent["attributes"] == {
        "messaging.system": "bgtasks", "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue", "messaging.destination.name": "default",
        "messaging.message.id": task_id,
        "bgtasks.task.name": "demo.tasks.headers_then_succeed"}

    assert get_task_info(task_id, wait=10).state == "completed"
    [run] = wait_until(lambda: worker_spans(traced_worker, task_id), timeout=5)
    assert run["name"] == "bgtasks run demo.tasks.headers_then_succeed"
    assert run["kind"] == "CONSUMER" and run["status"] == "UNSET"
    assert (run["trace_id"], run["parent_id"]) == (sent["trace_id"], sent["span_id"])
    attributes = run["attributes"]
    assert attributes.pop("bgtasks.worker.id")
    assert attributes == {
        "messaging.system": "bgtasks", "messaging.operation.type": "process",
        "messaging.operation.name": "run", "messaging.destination.name": "default",
        "messaging.message.id": task_id, "bgtasks.task.name": "demo.tasks.headers_then_succeed",
        "bgtasks.task.attempt": 1, "bgtasks.task.outcome": "succeeded"}
    # the task saw the trace context and the producer's own header, not as arguments
    seen = recording.headers_seen(r, "traced")
    assert seen.pop("traceparent").startswith(f"00-{sent['trace_id']}-{sent['span_id']}-")
    assert seen == {"tenant": "acme"}


def test_a_retried_task_has_one_run_span_per_attempt_under_the_enqueue(traced,
                                                                      traced_worker):
    task_id = tasks.headers_then_succeed.enqueue("retried", 1).id
    sent = enqueue_span(traced, task_id)
    assert get_task_info(task_id, wait=10).state == "completed"
    runs = wait_until(lambda: len(spans := worker_spans(traced_worker, task_id)) == 2
                      and spans, timeout=5)
    first, second = sorted(runs, key=lambda s: s["attributes"]["bgtasks.task.attempt"])
    for run in (first, second):
        assert (run["trace_id"], run["parent_id"]) == (sent["trace_id"], sent["span_id"])
    assert (first["attributes"]["bgtasks.task.attempt"],
            first["attributes"]["bgtasks.task.outcome"]) == (1, "retried")
    assert first["status"] == "ERROR" and first["events"] == ["exception"]
    assert (second["attributes"]["bgtasks.task.attempt"],
            second["attributes"]["bgtasks.task.outcome"]) == (2, "succeeded")
    assert second["status"] == "UNSET" and second["events"] == []
