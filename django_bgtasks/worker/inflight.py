"""What one worker process holds: claimed tasks, their threads, their pending acks."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

from ..broker.types import Ack, ClaimedTask
from ..context import Progress, RunControl
from ..message import TaskMessage


class Running:
    """One claimed attempt, from claim until its ack reached Redis."""

    __slots__ = ("claimed", "queue", "msg", "holds_thread", "thread_ident", "deadline",
                 "started_at", "interrupted_at", "interrupted_by", "interruption", "ack",
                 "ack_sent",
                 "control", "cancel_seen_at", "sent_progress")

    def __init__(self, claimed: ClaimedTask, queue: str, msg: TaskMessage) -> None:
        self.claimed = claimed
        self.queue = queue
        self.msg = msg
        self.holds_thread = True  # queued for, or running in, a worker thread
        self.thread_ident: int | None = None
        self.deadline: float | None = None  # monotonic; set when the thread starts it
        self.started_at: float | None = None  # monotonic
        self.interrupted_at: float | None = None  # when the timeout/cancel was signalled
        self.interrupted_by: type[BaseException] | None = None  # TaskTimeout/TaskCancelled
        self.interruption: object = None  # what the interrupting action returned (how)
        # The run's side the task writes (progress) and the heartbeat sets (cancel).
        self.control = RunControl()
        self.cancel_seen_at: float | None = None  # monotonic: the heartbeat learned it
        self.sent_progress: Progress | None = None  # what a renewal last wrote
        self.ack: Ack | None = None  # how it ended, once it did
        self.ack_sent = False  # Redis has taken the ack

    @property
    def done_with(self) -> bool:
        return self.ack_sent and not self.holds_thread

    @property
    def key(self) -> tuple[str, int]:
        return (self.claimed.id, self.claimed.attempt)


class InFlight:
    """Thread-safe registry of the Running attempts of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], Running] = {}

    def add(self, entry: Running) -> None:
        with self._lock:
            self._entries[entry.key] = entry

    def busy_threads(self) -> int:
        with self._lock:
            return sum(1 for e in self._entries.values() if e.holds_thread)

    def unfinished(self) -> list[Running]:
        """Attempts still without an outcome."""
        with self._lock:
            return [e for e in self._entries.values() if e.ack is None]

    def controlled(self, renew: bool, started_before: float) -> dict[str, list[Running]]:
        """Per queue, the attempts a control call covers: with ``renew``, every one whose
        lease this process must keep; else the runs started before ``started_before``
        (monotonic) that have no outcome yet (a shorter run ends before a cancel matters,
        and a stream of short runs costs no control calls)."""
        found: dict[str, list[Running]] = defaultdict(list)
        with self._lock:
            for entry in self._entries.values():
                if entry.ack_sent:
                    continue
                if renew or (entry.ack is None and entry.started_at is not None
                             and entry.started_at <= started_before):
                    found[entry.queue].append(entry)
        return found

    def start(self, entry: Running, deadline: float) -> bool:
        """A worker thread takes ``entry``; False when its outcome was already decided."""
        with self._lock:
            if entry.ack is not None:
                return False
            entry.thread_ident = threading.get_ident()
            entry.deadline = deadline
            entry.started_at = time.monotonic()
            return True

    def interrupt(self, entry: Running, action: Callable[[int], object],
                  again: bool = False) -> bool:
        """Call ``action(thread_ident)`` once (or ``again``, after a first interruption),
        only while ``entry`` still runs in that thread without an outcome: checked under the
        lock, so a thread that has moved on to another task is never interrupted for this
        one. What ``action`` returns is kept in ``entry.interruption``."""
        with self._lock:
            if (entry.ack is not None or not entry.holds_thread or entry.thread_ident is None
                    or (entry.interrupted_at is not None) != again):
                return False
            if not again:
                entry.interrupted_at = time.monotonic()
            entry.interruption = action(entry.thread_ident)
            return True

    def take_unstarted(self, make_ack) -> list[tuple[Running, Ack]]:
        """Decide, atomically, the outcome of every attempt no thread has started yet."""
        taken = []
        with self._lock:
            for entry in self._entries.values():
                if entry.ack is None and entry.thread_ident is None:
                    entry.ack = make_ack(entry)
                    taken.append((entry, entry.ack))
        return taken

    def owes_ack(self, task_id: str) -> bool:
        """True while an attempt of ``task_id`` has not had its outcome written."""
        with self._lock:
            return any(key[0] == task_id and not entry.ack_sent
                       for key, entry in self._entries.items())

    def finish(self, entry: Running, ack: Ack) -> bool:
        """Record the outcome; False when another party (timeout, shutdown) already did."""
        with self._lock:
            if entry.ack is not None:
                return False
            entry.ack = ack
            return True

    def release_thread(self, entry: Running) -> None:
        with self._lock:
            entry.holds_thread = False
            if entry.done_with:
                self._entries.pop(entry.key, None)

    def acknowledged(self, acks: list[Ack]) -> None:
        """Forget attempts whose ack Redis has taken (once no thread runs them)."""
        with self._lock:
            for ack in acks:
                entry = self._entries.get((ack.id, ack.attempt))
                if entry is not None:
                    entry.ack_sent = True
                    if entry.done_with:
                        del self._entries[entry.key]
