"""Celery: Redis as the broker, no result backend (the tasks return nothing).

Worker: ``celery -A peers.celery_app worker -P prefork -c 2 --loglevel WARNING``.
Scheduled tasks: ``stamp.apply_async(args, countdown=2)``; the worker fetches them at once
and holds them in memory until their ETA.
"""

from __future__ import annotations

import os

from celery import Celery

from peers import work

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)


@app.task
def incr(i: int) -> None:
    work.incr()


@app.task
def stamp(kind: str, ref: float) -> None:
    work.stamp(kind, ref)


def send(i: int) -> None:
    incr.delay(i)


def send_stamp(kind: str, ref: float) -> None:
    stamp.delay(kind, ref)


def send_due(due: float, delay: float) -> None:
    stamp.apply_async(("due", due), countdown=delay)
