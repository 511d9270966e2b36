"""Hooks (BGTASKS['HOOKS']) for the tests of docs/tracing.md: ones that note what they see,
ones that raise, and the OpenTelemetry hook with a TracerProvider that writes the worker's
spans to a file the test reads (BGTASKS_TEST_SPANS)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django_bgtasks.contrib.opentelemetry import OpenTelemetryHook
from django_bgtasks.hooks import AttemptInfo, EnqueueInfo, TaskHook

# What the noting hooks saw, in order: (hook, event, detail), in this process.
EVENTS: list[tuple[str, str, Any]] = []


class Outer(TaskHook):
    """Notes its blocks; adds the header 'tenant' at enqueue."""

    label = "outer"

    @contextmanager
    def enqueue(self, task: EnqueueInfo, headers: dict[str, str]) -> Iterator[None]:
        EVENTS.append((self.label, "enqueue", dict(headers)))
        headers.setdefault("tenant", "acme")
        try:
            yield
        finally:
            EVENTS.append((self.label, "enqueued", task.id))

    @contextmanager
    def attempt(self, run: AttemptInfo) -> Iterator[None]:
        EVENTS.append((self.label, "attempt", dict(run.headers)))
        yield
        EVENTS.append((self.label, "attempted", (run.attempt, run.outcome,
                                                 type(run.exception).__name__)))


class Inner(Outer):
    """Listed after Outer: sees what Outer added."""

    label = "inner"


class RaisesAtStart(TaskHook):
    """Raises as each of its blocks starts."""

    def enqueue(self, task: EnqueueInfo, headers: dict[str, str]) -> Any:
        raise RuntimeError("enqueue hook broken")

    def attempt(self, run: AttemptInfo) -> Any:
        raise RuntimeError("attempt hook broken")


class RaisesAtEnd(TaskHook):
    """Raises as each of its blocks ends."""

    @contextmanager
    def enqueue(self, task: EnqueueInfo, headers: dict[str, str]) -> Iterator[None]:
        yield
        raise RuntimeError("enqueue hook broken at the end")

    @contextmanager
    def attempt(self, run: AttemptInfo) -> Iterator[None]:
        yield
        raise RuntimeError("attempt hook broken at the end")


class BadHeader(TaskHook):
    """Adds a header whose value is not a str."""

    def enqueue(self, task: EnqueueInfo, headers: dict[str, Any]) -> Any:
        headers["retries"] = 3
        return super().enqueue(task, headers)


class Swallows(TaskHook):
    """Its blocks' __exit__ returns True, which would swallow an exception."""

    class Block:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> bool:
            return True

    def enqueue(self, task: EnqueueInfo, headers: dict[str, str]) -> Any:
        return self.Block()


class NotAHook:
    """Has neither enqueue() nor attempt()."""


_installed = threading.Lock()


class FileTracing(OpenTelemetryHook):
    """The OpenTelemetry hook in a process whose finished spans go, one JSON line each,
    to the file named by BGTASKS_TEST_SPANS (the SDK installed on first use)."""

    def __init__(self) -> None:
        install_file_provider(os.environ["BGTASKS_TEST_SPANS"])
        super().__init__()


def install_file_provider(path: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with _installed:
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return  # once per process (a forked child has its parent's)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
        trace.set_tracer_provider(provider)


def span_data(span: Any) -> dict[str, Any]:
    """A finished SDK span as plain data (ids as hex), as the tests compare them."""
    parent = span.parent
    return {
        "name": span.name, "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "attributes": dict(span.attributes or {}), "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
    }


class JsonLinesExporter:
    """A SpanExporter appending each span as a JSON line (the SDK's protocol: export,
    shutdown, force_flush)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(span_data(span)) + "\n" for span in spans)
        with self.lock, open(self.path, "a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
