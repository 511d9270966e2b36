"""The enqueue journal: behind Sentinel and on a cluster, what this process enqueued
lately, to be written again to a new master.

Redis replicates asynchronously. When Sentinel promotes a replica (a planned failover, or
the master's death), writes the old master acknowledged after the promotion, or before
the replica had them, are dropped when it becomes a replica itself: measured, 7,790 to
21,835 acknowledged enqueues per planned failover at full speed. WAIT_REPLICAS=1 does not
close that (a second replica still attached to the old master confirms them, then resyncs
and drops them), and costs about half the throughput. The journal costs a deque append
per enqueue call: it keeps the calls acknowledged in the last ``window`` seconds and,
when the master changes, writes them again. Enqueueing is idempotent per task id, so a
task the new master has is reported as existing, and one it lost is written again.

A master change is learnt from Sentinel's ``+switch-master`` (sentinel_watch.py) or from
the address an acknowledgement came from, whichever comes first. On Redis Cluster, each
queue's master is the node serving its slot: when a replica takes over (a killed master,
or a forced failover), the first acknowledgement from it writes that queue's recent calls
again. The replay runs on a thread of its own (``Replayer``): no ``enqueue()`` waits for it.
The window is counted back from the newest acknowledgement, not from now: while the
master is unreachable nothing is pruned, so the unreplicated tail of a dead master is
still there when its successor is found, however long Sentinel takes.

Not covered: a process that exits before it learns of the switch; replication that lags
more than ``window`` behind. A replayed task that had already run and was forgotten (no
``result_ttl``) runs again: at least once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .packing import ENQUEUE_BATCH, ENQUEUE_FIELDS

logger = logging.getLogger("django_bgtasks")

MAX_BYTES = 64 * 2**20  # a bound on the journal's memory, whatever the messages weigh
# What the sync and async brokers log around a replay (the same words from both).
UNLISTED = "queue %s could not be listed for the admin yet: %s"
REPLAY_FAILED = ("could not write %d recent task(s) of queue %s again after a master switch "
                 "(%s): %s")
REPLAYED = ("wrote the enqueues of the last %gs again (%s): %d task(s); those the new master "
            "had are unchanged")


def replay_batches(calls: Sequence[tuple[str, Sequence[Any]]], wake_channel: str,
                   ) -> Iterator[tuple[str, list[Any], int]]:
    """Journaled enqueue calls regrouped as (queue, script arguments, tasks) per queue
    and batch of ENQUEUE_BATCH, for writing again to a new master."""
    fields_by_queue: dict[str, list[Any]] = {}
    for queue, args in calls:
        fields_by_queue.setdefault(queue, []).extend(args[1:])  # args[0]: the wake channel
    per_call = ENQUEUE_BATCH * ENQUEUE_FIELDS
    for queue, fields in fields_by_queue.items():
        for start in range(0, len(fields), per_call):
            part = fields[start:start + per_call]
            yield queue, [wake_channel, *part], len(part) // ENQUEUE_FIELDS


class EnqueueJournal:
    """Thread-safe record of (acknowledged at, queue, script arguments) of enqueue calls,
    and of the master each queue's calls were acknowledged by."""

    def __init__(self, window: float, max_bytes: int = MAX_BYTES) -> None:
        self.window = window
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: deque[tuple[float, str, Sequence[Any], int]] = deque()
        self._bytes = 0
        self._masters: dict[str, Any] = {}  # queue -> the master its calls reached
        self.switches = 0  # master changes seen, for calls that straddle one
        self._dropped_warned = False

    def record(self, queue: str, args: Sequence[Any], master: Any,
               switches_at_start: int) -> list[tuple[str, Sequence[Any]]]:
        """Note an acknowledged call; returns what to write again now: the queue's recent
        calls when ``master`` is new to it, or this call alone when a switch happened while
        it ran (it may have reached the old master)."""
        size = sum(len(a) if isinstance(a, (str, bytes)) else 8 for a in args)
        now = time.monotonic()
        with self._lock:
            replay = self._switch_to(master, [queue])
            if not replay and switches_at_start != self.switches:
                replay = [(queue, args)]
            self._entries.append((now, queue, args, size))
            self._bytes += size
            self._prune(now)
        return replay

    def switched(self, master: Any) -> list[tuple[str, Sequence[Any]]]:
        """Sentinel announced ``master`` (of every queue): what to write to it."""
        with self._lock:
            return self._switch_to(master, list(self._masters))

    def _switch_to(self, master: Any, queues: list[str]) -> list[tuple[str, Sequence[Any]]]:
        moved = set()
        for queue in queues:
            known = self._masters.get(queue)
            if known != master:
                self._masters[queue] = master
                if known is not None:  # the first acknowledgement: nothing was elsewhere
                    moved.add(queue)
        if not moved:
            return []
        self.switches += 1
        return [(queue, args) for _, queue, args, _ in self._entries if queue in moved]

    def _prune(self, newest: float) -> None:
        entries = self._entries
        while entries and (entries[0][0] < newest - self.window
                           or self._bytes > self._max_bytes):
            if entries[0][0] >= newest - self.window and not self._dropped_warned:
                self._dropped_warned = True
                logger.warning("the enqueue journal holds more than %d MB; its oldest calls "
                               "are dropped before their window ends (a failover now could "
                               "lose them)", self._max_bytes // 2**20)
            self._bytes -= entries.popleft()[3]


Replay = Sequence[tuple[str, Sequence[Any]]]


class Replayer:
    """Writes journaled calls again on a thread of its own, so that no ``enqueue()`` waits
    for it: the call that first reaches a new master (hundreds of journaled tasks behind
    it) returns as fast as any other.

    The thread is started when there is something to write and ends when there is nothing
    left. It is not a daemon: a producer that exits right after a failover (a management
    command, a script) still writes its journal to the new master before the interpreter
    ends, as it did when the replay ran inside its last ``enqueue()``.
    """

    def __init__(self, write: Callable[[Replay, str], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._todo: deque[tuple[Replay, str]] = deque()
        self._thread: threading.Thread | None = None

    def submit(self, calls: Replay, why: str) -> None:
        """Write ``calls`` again soon, after anything submitted before them."""
        with self._lock:
            self._todo.append((calls, why))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bgtasks-journal-replay")
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far was written (or failed); True if so."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._todo:
                    self._thread = None
                    return
                calls, why = self._todo.popleft()
            try:
                self._write(calls, why)
            except Exception:  # noqa: BLE001  (the next batch must still be written)
                logger.exception("writing the enqueue journal again failed (%s)", why)
