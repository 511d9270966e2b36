"""Dramatiq: a RedisBroker on the benchmark's Redis, actors sent with ``.send``.

Worker: ``dramatiq peers.dramatiq_app --processes 2 --threads 8``; the module sets the
``dramatiq`` logger to WARNING (the CLI configures INFO before importing it).
Scheduled tasks: ``stamp.send_with_options(args=..., delay=2000)`` (milliseconds).
"""

from __future__ import annotations

import logging
import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peers import work

logging.getLogger("dramatiq").setLevel(logging.WARNING)
broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor
def incr(i: int) -> None:
    work.incr()


@dramatiq.actor
def stamp(kind: str, ref: float) -> None:
    work.stamp(kind, ref)


def send(i: int) -> None:
    incr.send(i)


def send_stamp(kind: str, ref: float) -> None:
    stamp.send(kind, ref)


def send_due(due: float, delay: float) -> None:
    stamp.send_with_options(args=("due", due), delay=int(delay * 1000))
