"""Claims tasks in batches with leases, runs them in threads, and acknowledges finished
ones in the same script call that claims the next batch."""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from ..backoff import reconnect_delay
from ..broker.redis import RedisBroker
from ..broker.types import Ack, ClaimedTask
from ..exceptions import BgTasksError, TaskCancelled, TaskTimeout
from .burst import forward_due_now
from .config import WorkerConfig
from .execution import TaskExecutor, log_corrupt
from .inflight import InFlight, Running
from .lost import announce_expired

logger = logging.getLogger("django_bgtasks.worker")

IDLE_WAIT = 1.0  # blocking wait for work when nothing runs (bounds shutdown latency)
BUSY_WAIT = 0.1  # blocking wait for work while tasks run (bounds the ack delay)
QUEUE_RETRY_CAP = 0.5  # seconds: the longest pause of a queue whose Redis is away
PREFETCH_BELOW = 0.05  # seconds: tasks shorter than this on average get prefetched


class Processor:
    """One process's fetcher thread plus ``config.threads`` worker threads."""

    def __init__(self, broker: RedisBroker, config: WorkerConfig, worker_id: str,
                 executor: TaskExecutor, inflight: InFlight,
                 on_outcomes: Callable[[Iterable[str]], None] | None = None,
                 on_forward: Callable[[str, list[tuple[str, bytes]]], None] | None = None,
                 forward_now: Callable[[], int] | None = None) -> None:
        self._broker = broker
        self._on_forward = on_forward  # given the workflow members a claim call ended
        # burst: forward every workflow end waiting in the outboxes now; how many were
        # (a step they release is more to run)
        self._forward_now = forward_now
        self._on_outcomes = on_outcomes  # told the outcomes Redis took (burst's tally)
        self._config = config
        self._worker_id = worker_id
        self._executor = executor
        self.inflight = inflight
        self._work: queue_module.SimpleQueue[Running | None] = queue_module.SimpleQueue()
        self._finished: queue_module.SimpleQueue[tuple[str, Ack]] = queue_module.SimpleQueue()
        self._outbox: dict[str, list[Ack]] = defaultdict(list)
        # A queue whose Redis is away (its cluster master failing over) waits for its own
        # retry time; the other queues are served meanwhile.
        self._queue_failures: dict[str, int] = {}
        # Per queue: the number of the last claim call, and of the last whose reply came
        # back; Redis undoes a claim whose reply was lost (claim.lua).
        self._claim_seq: dict[str, int] = defaultdict(int)
        self._claim_known: dict[str, int] = defaultdict(int)
        self._resent: set[tuple[str, int]] = set()  # acks sent in a call that failed
        self._queue_retry_at: dict[str, float] = {}
        # The exchange state above (outbox, claim sequences, retry times) is the fetcher's,
        # and a worker thread's that hands its slot on (_hand_over): one at a time.
        self._exchange_lock = threading.Lock()
        self._stopping = threading.Event()
        self._retiring = threading.Event()
        self._stop_deadline = float("inf")
        self._fetcher: threading.Thread | None = None
        self._count_lock = threading.Lock()
        self.finished_count = 0
        self.exited = threading.Event()
        self.drained = False  # burst: exited because nothing was left to run
        # True while the fetcher waits in Redis for new work with tasks running: a task
        # that finishes then sends its outcome at once, from its own thread (a run of a
        # saturated limit hands its slot on, and a lease is not held for nothing).
        self._waiting_in_redis = False
        # Moving average of task durations; starts "long" so nothing is prefetched
        # before the first tasks have shown how long they take.
        self._recent_duration = float("inf")

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        for index in range(self._config.threads):
            threading.Thread(target=self._work_loop, name=f"bgtasks-worker-{index}",
                             daemon=True).start()
        self._fetcher = threading.Thread(target=self._fetch_loop, name="bgtasks-fetcher",
                                         daemon=True)
        self._fetcher.start()

    def stop(self, timeout: float) -> None:
        """Stop claiming; running tasks get ``timeout`` seconds, then go back to pending."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + timeout
            self._stopping.set()
            self._wake_fetcher()

    def retire(self, reason: str) -> None:
        """Stop claiming and exit once the running tasks finish (the process is replaced)."""
        if not self._retiring.is_set():
            logger.info("worker process retiring: %s", reason)
            self._retiring.set()
            self._wake_fetcher()

    def _wake_fetcher(self) -> None:
        """Cut the fetcher's idle wait short: it has outcomes to send or a process to end."""
        try:
            self._broker.wake(list(self._config.queues), self._worker_id)
        except BgTasksError:
            pass  # Redis away: the fetcher's own wait ends within IDLE_WAIT

    def report(self, entry: Running, ack: Ack, wake: bool = True) -> bool:
        """Record an outcome; one decided outside the task's thread (timeout, shutdown)
        wakes the fetcher to send it (a worker thread sends its own: _hand_over)."""
        if self.inflight.finish(entry, ack):
            self._finished.put((entry.queue, ack))
            if wake and self._waiting_in_redis:
                self._waiting_in_redis = False
                self._wake_fetcher()
            return True
        return False

    def _hand_over(self) -> None:
        """A run ended while the fetcher waits in Redis: send its outcome and claim more
        from this thread, in one round trip, and run what came back here. Waking the
        fetcher to do it costs a round trip and two thread hand-offs more, which is most
        of the time a slot of a saturated limit stands idle between runs."""
        if not self._waiting_in_redis:
            return  # the fetcher is about to exchange: it takes this outcome along
        with self._exchange_lock:
            if self._finished.empty() or self._stopping.is_set() or self._retiring.is_set():
                return  # sent already by another thread; or the fetcher's to finish
            try:
                self._exchange()
            except BgTasksError:
                self._wake_fetcher()  # the fetch loop owns the back-off (outcomes kept)

    # -- worker threads ---------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            try:
                entry = self._work.get()
                if entry is None:
                    return
                try:
                    self._run_entry(entry)
                except BaseException as exc:  # noqa: BLE001
                    # The watchdog's interruption landed after the task's own code (or a
                    # bug of ours): the attempt still gets an outcome, now, rather than
                    # its lease renewed until the watchdog gives up on this thread.
                    self.report(entry, self._executor.last_resort_ack(
                        entry.claimed, entry.msg, exc, entry.control))
                finally:
                    self.inflight.release_thread(entry)
                self._hand_over()
            except (TaskTimeout, TaskCancelled):
                # An interruption that landed just after its task had been reported.
                logger.debug("a timeout or cancel interruption arrived after its task ended")
            except Exception:
                # Never lose a thread: the process would run with fewer than it says.
                logger.exception("worker thread: unexpected error; the thread goes on")

    def _run_entry(self, entry: Running) -> None:
        if self._stopping.is_set() or self._retiring.is_set():
            return  # not started: the fetcher puts it back at the head of its queue
        if not self.inflight.start(entry, time.monotonic() + entry.msg.timeout):
            return  # put back by a shutdown while it waited for this thread
        started = time.monotonic()
        ack = self._executor.run(entry.claimed, entry.msg, entry.control)
        self._note_duration(time.monotonic() - started)
        if not self.report(entry, ack, wake=False):
            logger.warning("task %s[%s] returned after its outcome was decided (timeout or "
                           "shutdown); this result is dropped", entry.msg.name,
                           entry.claimed.id)
        with self._count_lock:
            self.finished_count += 1
            count = self.finished_count
        limit = self._config.max_tasks_per_child
        if limit and count >= limit:
            self.retire(f"ran {count} tasks (--max-tasks-per-child {limit})")

    def _note_duration(self, seconds: float) -> None:
        # A racy update from several threads is fine: it is only a hint.
        previous = self._recent_duration
        self._recent_duration = seconds if previous == float("inf") else (
            0.9 * previous + 0.1 * seconds)

    # -- fetcher ----------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    with self._exchange_lock:
                        claimed = self._exchange()
                        failures = 0
                        if self._finished_all():
                            return
                        if not claimed and self._config.burst and self._drained():
                            self.drained = True
                            return
                    if not claimed:
                        self._wait()
                except BgTasksError as exc:
                    self._queue_retry_at.clear()  # the loop's backoff is the wait now
                    delay = reconnect_delay(failures, cap=QUEUE_RETRY_CAP)
                    failures += 1
                    logger.warning("fetcher: %s; retrying in %.1fs (outcomes are kept)", exc,
                                   delay)
                    time.sleep(delay)
                    continue
                except Exception:
                    delay = reconnect_delay(failures)
                    failures += 1
                    logger.exception("fetcher: unexpected error; retrying in %.1fs", delay)
                    time.sleep(delay)
        finally:
            self.exited.set()

    def _finished_all(self) -> bool:
        """True when this process may exit: stopping or retiring, and nothing is owed."""
        if not (self._stopping.is_set() or self._retiring.is_set()):
            return False
        if any(self._outbox.values()) or not self._finished.empty():
            return False
        if self._stopping.is_set() and time.monotonic() >= self._stop_deadline:
            self._requeue_running()
            return not any(self._outbox.values()) and self._finished.empty()
        return not self.inflight.unfinished()

    def _drained(self) -> bool:
        """Burst: True once the claim just made found no task in any queue while this
        process held none, nothing is owed to Redis, and no due task was left to move.

        A task another process still runs may enqueue more: that process claims it
        before it concludes the same, so the burst still reaches its fixed point."""
        if self._stopping.is_set() or self._retiring.is_set() or self._queue_retry_at:
            return False
        if any(self._outbox.values()) or not self._finished.empty():
            return False
        if self.inflight.unfinished() or self.inflight.busy_threads():
            return False
        if self._forward_now is not None and self._forward_now():
            return False
        return forward_due_now(self._broker, self._config.queues) == 0

    def _capacity(self) -> int:
        """How many claimed tasks this process may hold: its threads, plus as many again
        while tasks are short. The extra ones wait locally, so threads never wait for a
        round trip and acks go out in batches. Long tasks get no prefetch, so that a
        claimed task never waits behind them while another process idles."""
        threads = self._config.threads
        return 2 * threads if self._recent_duration < PREFETCH_BELOW else threads

    def _wait(self) -> None:
        busy = self.inflight.busy_threads()
        # A task reports its outcome before it frees its thread: read after `busy`, this
        # sees every outcome of a task that `busy` no longer counts. Without it, a task
        # finishing during the last exchange left its outcome unsent through a whole idle
        # wait (up to IDLE_WAIT, its lease held, and a re-run if the process died then).
        if not self._finished.empty():
            return
        if self._stopping.is_set() or self._retiring.is_set() or busy >= self._capacity():
            try:  # wake as soon as a task finishes
                queue, ack = self._finished.get(timeout=BUSY_WAIT)
            except queue_module.Empty:
                return
            with self._exchange_lock:
                self._outbox[queue].append(ack)
            return
        timeout = BUSY_WAIT if busy else IDLE_WAIT
        if self._queue_retry_at:
            soonest = min(self._queue_retry_at.values()) - time.monotonic()
            timeout = max(0.01, min(timeout, soonest))
        # Set before the last look at _finished: a task finishing after that look sees the
        # flag and wakes the wait below (which ends at once if the wake came first).
        self._waiting_in_redis = busy > 0
        try:
            if busy and not self._finished.empty():
                return
            self._broker.wait_for_work(list(self._config.queues), timeout,
                                       waker=self._worker_id)
        finally:
            self._waiting_in_redis = False

    def _collect(self) -> None:
        while True:
            try:
                queue, ack = self._finished.get_nowait()
            except queue_module.Empty:
                return
            self._outbox[queue].append(ack)

    def _exchange(self) -> int:
        """Send collected acks and claim into free threads; returns how many were claimed."""
        self._collect()
        if self._stopping.is_set() or self._retiring.is_set():
            self._requeue_unstarted()
        free = self._free_threads()
        claimed = 0
        errors: list[tuple[str, BgTasksError, float]] = []
        if free:
            for queue in self._config.queue_order():
                got = self._claim_isolated(queue, free, errors)
                claimed += got
                free -= got
                if not free:
                    break
        for queue in [q for q, acks in self._outbox.items() if acks]:
            self._claim_isolated(queue, 0, errors)
        if errors and len(self._queue_retry_at) == len(self._config.queues):
            raise errors[0][1]  # nothing reachable: the fetch loop backs off, and says so
        for queue, exc, delay in errors:  # the other queues are served meanwhile
            logger.warning("fetcher: queue %s: %s; retrying in %.1fs (outcomes are kept)",
                           queue, exc, delay)
        return claimed

    def _claim_isolated(self, queue: str, limit: int,
                        errors: list[tuple[str, BgTasksError, float]]) -> int:
        """_claim, unless ``queue`` waits for its retry time; a failure is noted (the queue
        backs off on its own) rather than raised."""
        if time.monotonic() < self._queue_retry_at.get(queue, 0.0):
            return 0
        try:
            got = self._claim(queue, limit)
        except BgTasksError as exc:
            failures = self._queue_failures.get(queue, 0)
            self._queue_failures[queue] = failures + 1
            delay = reconnect_delay(failures, cap=QUEUE_RETRY_CAP)
            self._queue_retry_at[queue] = time.monotonic() + delay
            errors.append((queue, exc, delay))
            return 0
        self._queue_failures.pop(queue, None)
        self._queue_retry_at.pop(queue, None)
        return got

    def _free_threads(self) -> int:
        if self._stopping.is_set() or self._retiring.is_set():
            return 0
        return max(0, self._capacity() - self.inflight.busy_threads())

    def _claim(self, queue: str, limit: int) -> int:
        acks = self._outbox.get(queue) or []
        if not acks and not limit:
            return 0
        self._claim_seq[queue] += 1
        seq = self._claim_seq[queue]
        try:
            result = self._broker.claim(queue, self._worker_id, acks, limit,
                                        self._config.lease_ms, self._config.dead_max_tasks,
                                        self._config.dead_max_age_ms, claim_seq=seq,
                                        known_seq=self._claim_known[queue])
        except BgTasksError:
            # Redis may have applied these before the reply was lost: when they are sent
            # again, "ignored" means "saved already", not "lost".
            self._resent.update((ack.id, ack.attempt) for ack in acks)
            raise
        self._claim_known[queue] = seq
        self._outbox[queue] = []
        if self._on_outcomes is not None:
            self._on_outcomes([*(ack.outcome for ack in acks),
                               *("dead" for _ in result.killed)])
        self.inflight.acknowledged(acks)
        resent = ({ack.id for ack in acks if (ack.id, ack.attempt) in self._resent}
                  if self._resent else set())
        for task_id in result.ignored:
            if task_id in resent:
                logger.debug("task [%s]: its outcome was saved by a call whose reply was "
                             "lost", task_id)
            else:
                logger.warning("task [%s]: its lease was lost before its outcome was saved "
                               "(it was recovered and runs again)", task_id)
        if self._resent:
            self._resent.difference_update((ack.id, ack.attempt) for ack in acks)
        for task_id, error in result.killed:
            log_corrupt(task_id, error)
        if result.expired:
            announce_expired(self._broker, queue, result.expired)
        if result.forward and self._on_forward is not None:
            self._on_forward(queue, result.forward)
        for item in result.claimed:
            self._dispatch(queue, item)
        return len(result.claimed)

    def _dispatch(self, queue: str, item: ClaimedTask) -> None:
        msg = self._executor.decode(item)
        if isinstance(msg, Ack):  # corrupt: straight to the dead queue, no thread
            self._outbox[queue].append(msg)
            return
        entry = Running(item, queue, msg)
        self.inflight.add(entry)
        self._work.put(entry)

    # -- shutdown ---------------------------------------------------------------------

    def _requeue_unstarted(self) -> None:
        """Put back, at the head of pending, claimed tasks no thread has started."""
        for entry, ack in self.inflight.take_unstarted(_requeue_ack):
            self._outbox[entry.queue].append(ack)

    def _requeue_running(self) -> None:
        """The shutdown timeout passed: put back what still runs (its process exits)."""
        for entry in self.inflight.unfinished():
            if self.report(entry, _requeue_ack(entry)):
                logger.warning("task %s[%s] did not finish within the shutdown timeout; it "
                               "goes back to the head of its queue", entry.msg.name,
                               entry.claimed.id)
        self._collect()


def _requeue_ack(entry: Running) -> Ack:
    return Ack(entry.claimed.id, entry.claimed.attempt, "requeue")
