"""The processor in-process (real Redis): a stopping process does not sit out its idle
wait for work."""

from __future__ import annotations

import time

from django_bgtasks.worker.config import WorkerConfig
from django_bgtasks.worker.execution import TaskExecutor
from django_bgtasks.worker.inflight import InFlight
from django_bgtasks.worker.processor import IDLE_WAIT, Processor
from helpers import wait_until


def blocked_in_blpop(raw) -> bool:
    return any(client.get("cmd") == "blpop" for client in raw.client_list())


def test_stop_cuts_the_idle_wait_short(broker, raw):
    config = WorkerConfig(queues={"default": 1, "mail": 1}, processes=1, threads=2)
    processor = Processor(broker, config, "w-test", TaskExecutor("w-test"), InFlight())
    processor.start()
    wait_until(lambda: blocked_in_blpop(raw), timeout=5, interval=0.01,
               message="the fetcher waits for work")
    started = time.monotonic()
    processor.stop(timeout=10)
    assert processor.exited.wait(IDLE_WAIT)
    took = time.monotonic() - started
    assert took < IDLE_WAIT / 2, took  # before: it slept out the rest of its BLPOP (~1 s)
