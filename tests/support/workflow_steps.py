"""Drive workflow members without a worker: claim them and ack them as a worker's
processor does, then forward their ends to their barriers as its forwarder does
(WorkflowStore.forward)."""

from __future__ import annotations

from typing import Any

from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack
from django_bgtasks.broker.workflows import WorkflowStore
from django_bgtasks.conf import get_settings

HOUR_MS = 3_600_000


def finish(ids: list[str], outcome: str = "done", queue: str = "default",
           results: dict[str, str] | None = None, **ack: Any) -> int:
    """Claim exactly ``ids`` (the queue's only pending tasks), end each attempt with
    ``outcome`` (a 'done' one with ``results[id]``, JSON, kept an hour), then forward the
    members' ends; returns how many were forwarded."""
    broker = get_broker()
    claimed = broker.claim(queue, "test-host", [], len(ids), 60_000, 100_000, 10**12).claimed
    assert sorted(c.id for c in claimed) == sorted(ids)
    if outcome == "done":
        ack = {"result_ttl_ms": HOUR_MS, **ack}
    acks = [Ack(c.id, c.attempt, outcome,
                **({"result": results[c.id]} if results else {}), **ack) for c in claimed]
    acked = broker.claim(queue, "test-host", acks, 0, 60_000, 100_000, 10**12)
    assert acked.ignored == []
    assert len(acked.forward) == len(ids)  # each wrote its end to the outbox
    keep_ms = int(get_settings().WORKFLOW_KEEP * 1000)
    # by id: forward() reads the entries back, whatever form the claim's reply gives them in
    return WorkflowStore(broker).forward(queue, ids, keep_ms=keep_ms)
