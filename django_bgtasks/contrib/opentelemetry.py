"""Trace tasks with OpenTelemetry: ``BGTASKS["HOOKS"] =
["django_bgtasks.contrib.opentelemetry.OpenTelemetryHook"]`` (extra ``opentelemetry``).

Only the API is used: spans go wherever the process's TracerProvider sends them (none is
installed here). Each enqueue is a PRODUCER span whose context the global propagator
writes into the message's headers (``traceparent``...); each attempt is a CONSUMER span,
child of that enqueue span, current while the task runs, so the task's own spans nest
under it. Attempts of one task are siblings under their enqueue span, told apart by
``bgtasks.task.attempt``: the worker of a retry does not know the span of the attempt
before it (that would cost a Redis write per attempt), so they are not linked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from .. import __version__
from ..hooks import AttemptInfo, EnqueueInfo, TaskHook

SYSTEM = "bgtasks"  # messaging.system: not one of the conventions' names, so our own


class OpenTelemetryHook(TaskHook):
    """Spans around enqueues and attempts, linked through the messages' headers."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        # Without a provider: the global one, looked up at each span (a proxy), so a
        # provider installed after the hook was made is used.
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider)

    @contextmanager
    def enqueue(self, task: EnqueueInfo, headers: dict[str, str]) -> Iterator[None]:
        """A PRODUCER span around the write, its context put into ``headers``."""
        attributes: dict[str, AttributeValue] = {
            "messaging.system": SYSTEM, "messaging.operation.type": "send",
            "messaging.operation.name": "enqueue",
            "messaging.destination.name": task.queue_name, "messaging.message.id": task.id,
            "bgtasks.task.name": task.name,
        }
        if task.workflow:
            attributes["bgtasks.workflow.id"] = task.workflow
        with self.tracer.start_as_current_span(f"bgtasks enqueue {task.name}",
                                               kind=SpanKind.PRODUCER, attributes=attributes):
            propagate.inject(headers)
            yield

    @contextmanager
    def attempt(self, run: AttemptInfo) -> Iterator[None]:
        """A CONSUMER span around the attempt, child of its enqueue span (when the
        headers carry one), with its outcome; the exception recorded on failure."""
        attributes: dict[str, AttributeValue] = {
            "messaging.system": SYSTEM, "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.destination.name": run.queue_name, "messaging.message.id": run.id,
            "bgtasks.task.name": run.name, "bgtasks.task.attempt": run.attempt,
            "bgtasks.worker.id": run.worker_id,
        }
        # The worker decides the outcome, and hands over the exception: the span need not
        # watch one cross its block (none does).
        with self.tracer.start_as_current_span(
                f"bgtasks run {run.name}", context=propagate.extract(run.headers),
                kind=SpanKind.CONSUMER, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            yield
            span.set_attribute("bgtasks.task.outcome", run.outcome or "unknown")
            if run.exception is not None:
                span.record_exception(run.exception)
                span.set_status(Status(StatusCode.ERROR,
                                       f"{type(run.exception).__name__}: {run.exception}"))
