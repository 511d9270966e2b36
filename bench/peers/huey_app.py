"""Huey: a RedisHuey on the benchmark's Redis, tasks called as plain functions.

Worker: ``huey_consumer peers.huey_app.huey -w 2 -k process -q`` (-q: WARNING).
Scheduled tasks: ``stamp.schedule(args, delay=2)``, run by the consumer's scheduler.
"""

from __future__ import annotations

import os

from huey import RedisHuey

from peers import work

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"])


@huey.task()
def incr(i: int) -> None:
    work.incr()


@huey.task()
def stamp(kind: str, ref: float) -> None:
    work.stamp(kind, ref)


def send(i: int) -> None:
    incr(i)


def send_stamp(kind: str, ref: float) -> None:
    stamp(kind, ref)


def send_due(due: float, delay: float) -> None:
    stamp.schedule(args=("due", due), delay=delay)
