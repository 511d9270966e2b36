"""Runs the bulk jobs queued from the admin ("run all" / "delete all" of a queue's state),
in the maintenance process: one job at a time, one bounded batch per script call.

A job is held under a lease that every batch renews (bulk_step.lua writes the batch, the
progress and the lease at once). If this process dies, the lease expires and any host's
maintenance process takes the job over where it stopped; if it stops cleanly, it hands
the job back at once. Only queues this host serves are looked at: a job of another queue
waits for a host that serves it.
"""

from __future__ import annotations

import logging

from ..broker.bulk import BulkJob, BulkJobStore
from ..broker.errors import worth_retrying
from ..broker.redis import RedisBroker
from ..exceptions import BgTasksError
from .component import Component
from .config import WorkerConfig

logger = logging.getLogger("django_bgtasks.worker")

IDLE = 1.0  # seconds between looks for a queued job: the admin says "within seconds"


class BulkJobs(Component):
    name = "bulk-jobs"

    def __init__(self, broker: RedisBroker, config: WorkerConfig, runner_id: str) -> None:
        super().__init__()
        self._jobs = BulkJobStore(broker)
        self._config = config
        self._runner = runner_id

    def tick(self) -> float:
        for queue in self._config.queues:
            if self.stopping:
                break
            job = self._jobs.claim(queue, self._runner, self._config.lease_ms)
            if job is not None:
                self._run_job(job)
                return 0.0  # another job may be waiting
        return IDLE

    def _run_job(self, job: BulkJob) -> None:
        logger.info("bulk job %s: %s (%d done so far%s)", job.id, job.describe(), job.done,
                    ", taken over from a stopped worker" if job.takeovers else "")
        while job.status == "running":
            if self.stopping:
                # Handed back, so that another host goes on now rather than after the lease.
                self._jobs.release(job, self._runner)
                logger.info("bulk job %s handed back at %d of %d (stopping)", job.id,
                            job.done, job.total)
                return
            try:
                after = self._jobs.step(job, self._runner, self._config.lease_ms,
                                        self._config.bulk_batch)
            except BgTasksError as exc:
                if worth_retrying(exc):
                    raise  # Redis is away: the loop backs off, then claims it again
                # Redis refused the batch: doing it again would get the same answer.
                self._jobs.release(job, self._runner, error=str(exc))
                logger.error("bulk job %s failed at %d of %d: %s", job.id, job.done,
                             job.total, exc)
                return
            if after is None:
                logger.warning("bulk job %s was taken over by another worker (this one held "
                               "it past its lease)", job.id)
                return
            job = after
        logger.info("bulk job %s %s: %d of %d task(s)%s", job.id, job.status, job.done,
                    job.total, f" ({job.note})" if job.note else "")
