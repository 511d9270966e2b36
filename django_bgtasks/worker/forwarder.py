"""Carries workflow members' ends from their queues' outboxes to their workflows' barriers
(broker/workflows.py). In a worker process it forwards what its own claims acknowledged,
at once; in the maintenance process it sweeps every queue's outbox, which picks up what
any other transition ended (a cancel, an expiry, a recovery) and what a process that died
mid-way left behind."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from ..broker.redis import RedisBroker
from ..broker.workflows import WorkflowStore, keep_ms
from .component import Component

logger = logging.getLogger("django_bgtasks.worker")

SWEEP_INTERVAL = 1.0  # seconds between sweeps of the outboxes (maintenance process)
SWEEP_MOST = 10_000  # outbox entries looked at per queue and sweep
# Under load (its last round carried GATHER_BUSY ends or more), a worker process's
# forwarder lets ends gather this long before it carries them, unless GATHER_MOST wait
# already: one barrier call then counts many (measured: per-member forwarding was most of
# a group's throughput loss). A lone end (a chain's link) is carried at once.
GATHER_SECONDS = 0.03
GATHER_BUSY = 8
GATHER_MOST = 500
IDLE_WAIT = 5.0  # seconds a worker process's forwarder sleeps with nothing submitted


class WorkflowForwarder(Component):
    name = "workflow-forwarder"

    def __init__(self, broker: RedisBroker, queues: list[str], sweep: bool) -> None:
        super().__init__()
        self._store = WorkflowStore(broker)
        self._queues = queues
        self._sweep = sweep
        self._keep_ms = keep_ms()
        self._lock = threading.Lock()
        self._submitted: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self._wake = threading.Event()
        # One forwarding at a time in this process, and how many entries it has carried:
        # a burst's check (forward_now) must see what this thread forwards meanwhile.
        self._working = threading.Lock()
        self._forwarded = 0
        self._reported = 0
        self._last_round = 0  # ends the last round carried
        # What the last sweep saw: an entry is swept only once it has waited a whole
        # interval, so the sweep does not race the worker that is forwarding it right now.
        self._seen: dict[str, dict[str, bytes]] = {}

    def submit(self, queue: str, entries: list[tuple[str, bytes]]) -> None:
        """Forward these outbox entries soon (the processor's thread: never blocks)."""
        with self._lock:
            self._submitted[queue].extend(entries)
        self._wake.set()

    def wait(self, seconds: float) -> None:
        self._wake.wait(seconds)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        super().shutdown(timeout)
        try:
            self._drain()  # what the last claims acknowledged
        except Exception as exc:  # noqa: BLE001  (kept in the outbox: the sweep forwards it)
            logger.warning("%s: could not forward at shutdown: %s", self.name, exc)

    def tick(self) -> float:
        self._wake.clear()
        if not self._sweep:
            with self._lock:
                waiting = sum(len(e) for e in self._submitted.values())
            if self._last_round >= GATHER_BUSY and 0 < waiting < GATHER_MOST:
                self._stop.wait(GATHER_SECONDS)
        self._drain()
        if not self._sweep:
            return IDLE_WAIT
        for queue in self._queues:
            if self.stopping:
                break
            now = dict(self._store.outbox_scan(queue, SWEEP_MOST))
            before = self._seen.get(queue, {})
            stale = [task_id for task_id, raw in now.items() if before.get(task_id) == raw]
            if stale:
                count = self._store.forward(queue, stale, keep_ms=self._keep_ms)
                logger.info("%s: forwarded %d workflow outcomes of queue %s left behind",
                            self.name, count, queue)
            self._seen[queue] = {k: v for k, v in now.items() if k not in stale}
        return SWEEP_INTERVAL

    def forward_now(self) -> int:
        """Forward every end waiting in this process's queues' outboxes, at once (a burst
        before it concludes that nothing is left: a step released is more to run)."""
        self._drain()
        with self._working:
            for queue in self._queues:
                waiting = [task_id for task_id, _ in self._store.outbox_scan(queue, SWEEP_MOST)]
                if waiting:
                    self._forwarded += self._store.forward(queue, waiting,
                                                           keep_ms=self._keep_ms)
            count, self._reported = self._forwarded - self._reported, self._forwarded
        return count

    def _drain(self) -> None:
        with self._working:
            with self._lock:
                batches, self._submitted = self._submitted, defaultdict(list)
            self._last_round = sum(len(e) for e in batches.values())
            for queue, entries in batches.items():
                try:
                    self._forwarded += self._store.forward_entries(queue, entries,
                                                                   keep_ms=self._keep_ms)
                except Exception:
                    # still in the outbox: tried again here, or by the maintenance sweep
                    with self._lock:
                        self._submitted[queue].extend(entries)
                    raise
