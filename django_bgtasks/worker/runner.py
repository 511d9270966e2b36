"""Runner: composes one worker process (the seed's ``Background``).

Start order: heartbeat first (leases of claimed tasks are renewed from the first claim),
then the timeout watchdog (or, in the maintenance process, the poller, recoverer,
janitor, bulk jobs and cron scheduler), and the processor last, once everything it
relies on runs.

Shutdown order is the reverse where it matters: the processor stops first (no new claims;
running tasks finish within the shutdown timeout or go back to the head of their queue;
every outcome is written), then the watchdog and the maintenance loops, and the heartbeat
last, so that leases stay renewed until the last outcome reached Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from ..broker.redis import RedisBroker
from ..periodic import entries
from .bulk import BulkJobs
from .burst import DRAINED_EXIT
from .component import Component
from .config import WorkerConfig
from .execution import TaskExecutor
from .forwarder import WorkflowForwarder
from .heartbeat import Heartbeat
from .inflight import InFlight
from .janitor import Janitor
from .periodic import PeriodicScheduler
from .poller import Poller
from .processor import Processor
from .recoverer import Recoverer
from .timeouts import TimeoutWatchdog

logger = logging.getLogger("django_bgtasks.worker")


def periodic_entries(config: WorkerConfig) -> list:
    """The valid periodic entries this host fires (none with --no-cron); problems are the
    system checks' to report (bgtasks.E013), here only logged."""
    if not config.cron:
        return []
    found, problems = entries()
    for problem in problems:
        logger.error("%s; this entry does not fire", problem)
    return found


class Runner:
    """Runs one worker process until asked to stop or until its processor retires.

    A worker process runs tasks (processor, heartbeat, watchdog); the one maintenance
    process runs the poller, recoverer, janitor and bulk jobs, apart from task threads,
    so that no task holding the GIL delays a due task or a lease recovery.
    """

    def __init__(self, broker: RedisBroker, config: WorkerConfig, worker_id: str,
                 maintenance: bool, alive: Callable[[int], None],
                 stop: threading.Event | None = None,
                 on_outcomes: Callable[[Iterable[str]], None] | None = None) -> None:
        self.config = config
        self.inflight = InFlight()
        self.heartbeat = Heartbeat(broker, config, self.inflight,
                                   lambda: alive(self.inflight.busy_threads()))
        self.processor: Processor | None = None
        self.components: list[Component] = []
        if maintenance:
            queues = list(config.queues)
            self.components = [Poller(broker, queues), Recoverer(broker, config),
                               Janitor(broker, config), BulkJobs(broker, config, worker_id),
                               WorkflowForwarder(broker, queues, sweep=True)]
            periodic = periodic_entries(config)
            if periodic:
                self.components.append(PeriodicScheduler(broker, periodic))
        else:
            executor = TaskExecutor(worker_id, config.log_arguments)
            forwarder = WorkflowForwarder(broker, list(config.queues), sweep=False)
            self.processor = Processor(broker, config, worker_id, executor, self.inflight,
                                       on_outcomes, forwarder.submit,
                                       forwarder.forward_now if config.burst else None)
            self.components = [TimeoutWatchdog(self.inflight, self.processor, executor,
                                               config.cancel_grace), forwarder]
        self._stop = stop or threading.Event()

    def run(self) -> int:
        """Run until stopped; returns the process's exit status (DRAINED_EXIT: a burst
        process found nothing left to run)."""
        self.heartbeat.start()
        for component in self.components:
            component.start()
        if self.processor:
            self.processor.start()
        while not self._stop.wait(0.2):
            if self.processor and self.processor.exited.is_set():
                break  # retired (the supervisor starts a new one), or a burst is done
        if self.processor:
            self.processor.stop(self.config.shutdown_timeout)
            self.processor.exited.wait()
        for component in self.components:
            component.shutdown()
        self.heartbeat.shutdown()
        return DRAINED_EXIT if self.processor and self.processor.drained else 0
