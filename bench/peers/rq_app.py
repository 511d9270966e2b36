"""RQ: one Queue on the benchmark's Redis, plain functions enqueued by reference.

Workers: 2 x ``rq worker --worker-class rq.worker.SimpleWorker --with-scheduler
--logging_level WARNING`` (SimpleWorker runs jobs in the worker process, no fork per job;
--with-scheduler: one of them moves ``enqueue_in`` jobs to the queue when due).
"""

from __future__ import annotations

from datetime import timedelta

from rq import Queue

from peers import work

queue = Queue("default", connection=work.client)


def incr(i: int) -> None:
    work.incr()


def stamp(kind: str, ref: float) -> None:
    work.stamp(kind, ref)


def send(i: int) -> None:
    queue.enqueue(incr, i)


def send_stamp(kind: str, ref: float) -> None:
    queue.enqueue(stamp, kind, ref)


def send_due(due: float, delay: float) -> None:
    queue.enqueue_in(timedelta(seconds=delay), stamp, "due", due)
