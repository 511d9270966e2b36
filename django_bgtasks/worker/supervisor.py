"""The supervisor: forks the worker processes, replaces those that die or hang, announces
the worker in Redis, and turns SIGTERM/SIGINT into a graceful shutdown.

The supervisor runs no threads, so forking a replacement is always safe: its broker is
made without the Sentinel watcher thread, and the children make their own. SIGTERM and
SIGINT are blocked around ``fork()``, so that neither the child runs the supervisor's
handler before installing its own, nor the parent handles one before it has recorded the
child it must pass the signal on to. A signal may reach
every process at once (systemd, Ctrl-C, ``kill -TERM -PGID``): children treat any signal
as "drain", and only the supervisor treats a second one as "exit now".

With ``--burst`` there is no maintenance process: the supervisor moves the due tasks to
pending before it starts the worker processes, each process exits once its queues are
drained (worker/burst.py), and the supervisor exits when all did. A process that ends
otherwise (a crash, --max-tasks-per-child) is replaced as usual.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.db import connections

from ..backoff import reconnect_delay
from ..broker import broker_owns_client, forget_brokers_after_fork, get_broker, make_broker
from ..broker.redis import RedisBroker
from ..checks import eviction_warning
from ..exceptions import BgTasksError, InvalidRedisSetting
from .burst import DRAINED_EXIT, BurstSummary, BurstTally, forward_due_now
from .config import WorkerConfig
from .lost import announce_cancelled, announce_dead
from .runner import Runner

logger = logging.getLogger("django_bgtasks.worker")

REGISTRY_INTERVAL = 5.0
SHORT_LIFE = 2.0  # a process that dies younger than this is crash-looping
HARD_STOP_MARGIN = 10.0  # after the shutdown timeout, for requeueing and writing outcomes
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass
class Child:
    pid: int
    started: float


@dataclass
class Supervisor:
    config: WorkerConfig
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    # --reload: the reloading process that started this one; if it dies, drain and exit
    # rather than run on as an orphan nobody stops.
    parent_pid: int | None = None

    def __post_init__(self) -> None:
        self._children: dict[int, Child | None] = {}
        self._failures: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self._signals = 0
        self._hard_deadline = float("inf")
        # Shared with the children across fork: when each last showed life, and its load.
        # Slots 0..P-1 run tasks; slot P is the maintenance process.
        self._slots = self.config.processes + 1
        self._alive_at = multiprocessing.RawArray("d", self._slots)
        self._busy = multiprocessing.RawArray("i", self._slots)
        self._started_at = time.time()
        self._broker: RedisBroker | None = None
        # Burst: the slots whose process found its queues drained (never replaced); the
        # maintenance slot has nothing to do in a burst.
        self._drained: set[int] = {self.config.processes} if self.config.burst else set()
        self._tally = BurstTally(self._slots) if self.config.burst else None

    # -- entry point ------------------------------------------------------------------

    def run(self) -> int:
        """Run until a signal asks to stop (or, in a burst, until nothing is left to run);
        returns the process exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if not self._wait_for_redis():
            return 0
        broker = self._own_broker()
        logger.info("worker %s starting: Redis %s, queues %s (%s), %d processes x %d threads "
                    "%s",
                    self.worker_id, broker.target,
                    ", ".join(f"{q}:{w}" for q, w in self.config.queues.items()),
                    "strict priority" if self.config.strict_priority else "weighted",
                    self.config.processes, self.config.threads,
                    "(burst: until nothing is due)" if self.config.burst
                    else "(+ 1 maintenance process)")
        self._warn_about_eviction(broker)
        if self.config.burst:
            self._forward_due(broker)
        next_registry = 0.0
        while True:
            self._reap()
            if self._signals >= 2:
                killed = [(slot, c.pid) for slot, c in self._children.items() if c]
                self._kill_all(signal.SIGKILL)
                self._reap_all()
                logger.warning("second signal: stopped at once; the tasks that were running "
                               "go back to their queues")
                for slot, pid in killed:  # now, as a dead process's, not after their lease
                    self._release_tasks_of(slot, pid, "was stopped at once by a second "
                                                      "signal")
                self._unregister(broker)
                self._close_broker()
                return 1
            self._check_parent()
            if self.config.burst and len(self._drained) == self._slots:
                break
            if self._signals:
                if not any(self._children.values()):
                    break
                if time.monotonic() > self._hard_deadline:
                    logger.error("worker processes did not stop in time; killing them")
                    self._kill_all(signal.SIGKILL)
            else:
                self._spawn_missing()
                self._kill_hung()
            if time.monotonic() >= next_registry:
                self._announce(broker)
                next_registry = time.monotonic() + REGISTRY_INTERVAL
            time.sleep(0.05)
        self._unregister(broker)
        self._close_broker()
        logger.info("worker %s stopped", self.worker_id)
        return 0

    def summary(self) -> BurstSummary | None:
        """Burst: how the attempts of this run ended (None outside a burst)."""
        return self._tally.summary() if self._tally else None

    def _forward_due(self, broker: RedisBroker) -> None:
        try:
            moved = forward_due_now(broker, self.config.queues)
        except BgTasksError as exc:  # the processes move them too before they exit
            logger.warning("burst: could not move the due tasks to pending yet: %s", exc)
            return
        if moved:
            logger.info("burst: %d due scheduled or retry task(s) moved to pending", moved)

    # -- signals ----------------------------------------------------------------------

    def _check_parent(self) -> None:
        if (self.parent_pid is not None and not self._signals
                and os.getppid() != self.parent_pid):
            logger.warning("the reloading process %d is gone: stopping", self.parent_pid)
            self._on_signal(signal.SIGTERM, None)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("received %s: finishing running tasks (up to %gs), then exiting; "
                        "send it again to exit at once", signal.Signals(signum).name,
                        self.config.shutdown_timeout)
            self._hard_deadline = (time.monotonic() + self.config.shutdown_timeout
                                   + HARD_STOP_MARGIN)
            self._kill_all(signal.SIGTERM)

    # -- children ---------------------------------------------------------------------

    def _spawn_missing(self) -> None:
        now = time.monotonic()
        for slot in range(self._slots):
            if (self._children.get(slot) is None and slot not in self._drained
                    and now >= self._restart_at.get(slot, 0.0)):
                self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        connections.close_all()  # a child must not share the parent's database sockets
        self._alive_at[slot] = time.monotonic()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if pid == 0:  # pragma: no cover - runs in the child, measured by end-to-end tests
            code = 1
            try:
                code = self._child_main(slot, blocked)
            except BaseException:
                logger.exception("worker process crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        self._children[slot] = Child(pid, time.monotonic())
        # A signal that came meanwhile is handled now, and reaches this child too.
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        logger.debug("started worker process %d (slot %d)", pid, slot)

    def _child_main(self, slot: int, mask: set) -> int:
        # First of all: the supervisor's handlers must never run in a child (the signals
        # are blocked until the child's own are in place).
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        random.seed()
        forget_brokers_after_fork()
        tally = self._tally
        runner = Runner(get_broker(), self.config, self._child_worker_id(slot, os.getpid()),
                        maintenance=slot == self.config.processes,
                        alive=lambda busy: self._mark_alive(slot, busy), stop=stop,
                        on_outcomes=(lambda outcomes: tally.count(slot, outcomes))
                        if tally else None)
        return runner.run()

    def _child_worker_id(self, slot: int, pid: int) -> str:
        """The id a child's claims carry (its tasks' `worker` field)."""
        return f"{self.worker_id}/{slot}:{pid}"

    def _release_tasks_of(self, slot: int, pid: int, how: str) -> None:
        """A task process died: put its claimed tasks back now rather than when their
        leases expire (the attempt counts, as with a lease). Best effort: if Redis is away
        the leases still bring them back."""
        if slot >= self.config.processes:
            return  # the maintenance process claims no tasks
        worker = self._child_worker_id(slot, pid)
        error = (f"WorkerLost: worker process {pid} {how} while the task was running (or "
                 f"waiting for a thread in that process)")
        try:
            broker = self._own_broker()
            for queue in self.config.queues:
                back, dead, cancelled = broker.release_worker(
                    queue, worker, error, self.config.dead_max_tasks,
                    self.config.dead_max_age_ms)
                if self._tally:  # failed attempts of this run
                    self._tally.count(slot, ["retry"] * len(back) + ["dead"] * len(dead))
                if back or dead:
                    logger.warning("queue %s: %d task(s) of worker process %d returned to "
                                   "pending, %d dead (it was their last attempt)", queue,
                                   len(back), pid, len(dead))
                if cancelled:
                    logger.warning("queue %s: %d task(s) of worker process %d ended "
                                   "cancelled (their cancel was requested): %s", queue,
                                   len(cancelled), pid, ", ".join(cancelled[:10]))
                announce_dead(broker, queue, dead)
                announce_cancelled(broker, queue, cancelled)
        except BgTasksError as exc:
            logger.warning("could not return the tasks of worker process %d at once (their "
                           "leases will): %s", pid, exc)

    def _mark_alive(self, slot: int, busy: int) -> None:
        self._alive_at[slot] = time.monotonic()
        self._busy[slot] = busy

    def _reap(self) -> None:
        for slot, child in list(self._children.items()):
            if child is None:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = child.pid, 0
            if pid == 0:
                continue
            self._children[slot] = None
            self._busy[slot] = 0
            lived = time.monotonic() - child.started
            if self._signals:
                continue
            if self.config.burst and os.WIFEXITED(status) and (
                    os.WEXITSTATUS(status) == DRAINED_EXIT):
                self._drained.add(slot)
                logger.debug("worker process %d: nothing left to run", child.pid)
                continue
            clean_exit = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            crashed_young = lived < SHORT_LIFE and not clean_exit
            failures = self._failures.get(slot, 0) + 1 if crashed_young else 0
            self._failures[slot] = failures
            delay = (reconnect_delay(failures - 1, base=0.5, cap=30.0, jitter=False)
                     if failures else 0.0)
            self._restart_at[slot] = time.monotonic() + delay
            if clean_exit:
                logger.info("worker process %d exited; starting a new one", child.pid)
            else:
                how = f"died ({_describe_status(status)})"
                logger.error("worker process %d %s after %.1fs; starting a new one%s",
                             child.pid, how, lived, f" in {delay:.1f}s" if delay else "")
                self._release_tasks_of(slot, child.pid, how)

    def _reap_all(self) -> None:
        for slot, child in self._children.items():
            if child is not None:
                try:
                    os.waitpid(child.pid, 0)
                except ChildProcessError:
                    pass
                self._children[slot] = None

    def _kill_all(self, signum: int) -> None:
        for child in self._children.values():
            if child is not None:
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass

    def _kill_hung(self) -> None:
        # A process whose heartbeat thread cannot run (a task holding the GIL in C code)
        # has lost its leases anyway: replace it; its tasks are recovered elsewhere.
        limit = max(2 * self.config.lease_seconds, 30.0)
        now = time.monotonic()
        for slot, child in self._children.items():
            if child is not None and now - self._alive_at[slot] > limit:
                logger.error("worker process %d showed no sign of life for %.0fs; killing it",
                             child.pid, now - self._alive_at[slot])
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._alive_at[slot] = now

    # -- Redis ------------------------------------------------------------------------

    def _wait_for_redis(self) -> bool:
        failures = 0
        while not self._signals:
            try:
                self._own_broker().ping()
                return True
            except InvalidRedisSetting:
                raise  # waiting would not mend the settings
            except BgTasksError as exc:
                delay = reconnect_delay(failures, base=0.5, cap=10.0)
                failures += 1
                logger.error("%s; retrying in %.1fs", exc, delay)
                time.sleep(delay)
        return False

    def _own_broker(self) -> RedisBroker:
        """The supervisor's broker: no thread of its own (it forks), never shared."""
        if self._broker is None:
            self._broker = make_broker(watch_master=False)
        return self._broker

    def _close_broker(self) -> None:
        if self._broker is not None:
            self._broker.close(close_client=broker_owns_client(self._broker))
            self._broker = None

    def _warn_about_eviction(self, broker) -> None:
        try:
            warning = eviction_warning(broker.eviction_policy())
        except BgTasksError as exc:
            logger.debug("could not read Redis' maxmemory-policy: %s", exc)
            return
        if warning:
            logger.warning("%s (%s) %s", warning.msg, warning.id, warning.hint)

    def _announce(self, broker) -> None:
        info = {
            "host": socket.gethostname(), "pid": str(os.getpid()),
            "queues": ",".join(f"{q}:{w}" for q, w in self.config.queues.items()),
            "processes": str(self.config.processes), "threads": str(self.config.threads),
            "started": f"{self._started_at:.3f}", "in_flight": str(sum(self._busy)),
        }
        try:
            for queue in self.config.queues:  # for the admin, again after a FLUSHALL
                broker.register_queue(queue)
            broker.heartbeat_worker(self.worker_id, info, ttl=3 * REGISTRY_INTERVAL)
        except BgTasksError as exc:
            # Informational only (Redis away, or full): the work goes on without it.
            logger.debug("could not announce the worker: %s", exc)

    def _unregister(self, broker) -> None:
        try:
            broker.remove_worker(self.worker_id)
        except BgTasksError:
            pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"
