"""django-bgtasks (ours): the producer side of bench/benchapp/tasks.py.

Worker: ``python -m django runbackground --processes 2 --threads 8`` (and ``--threads 1``)
with DJANGO_SETTINGS_MODULE=bench_settings (django_bgtasks logs at WARNING there).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_settings")
django.setup()

from benchapp.tasks import incr, stamp  # noqa: E402


def send(i: int) -> None:
    incr.enqueue(i)


def send_stamp(kind: str, ref: float) -> None:
    stamp.enqueue(kind, ref)


def send_due(due: float, delay: float) -> None:
    stamp.using(run_after=timedelta(seconds=delay)).enqueue("due", due)


def send_many(items: list[tuple[tuple, dict]]) -> list[Any] | None:
    """``incr.enqueue_many(items)``; None while this checkout has no enqueue_many."""
    if not hasattr(incr, "enqueue_many"):
        return None
    return incr.enqueue_many(items)


def check_enqueued(info: Any) -> bool:
    """True when the task of this TaskInfo is in Redis, waiting to run."""
    return incr.get_result(info.id).state == "pending"
