"""Enqueue throughput from async code against sync code, on one private Redis.

    python bench/aenqueue.py [--tasks 20000] [--in-flight 100] [--runs 3]

Starts a private redis-server on a free port, then, ``--runs`` times each: N ``aenqueue``
calls from one event loop with ``--in-flight`` of them awaiting Redis at a time (a
semaphore), and N sync ``enqueue`` calls one after the other. Redis is flushed before each
run. Prints the median tasks/s of each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time

from common import HERE, ROOT, start_redis, stop_redis


async def async_run(task, tasks: int, in_flight: int) -> float:
    """Seconds for ``tasks`` aenqueue calls, ``in_flight`` at a time, on this loop."""
    from django_bgtasks.broker.aio import aclose_brokers

    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            await task.aenqueue(i)

    await task.aenqueue(-1)  # the client and its script, made outside the timing
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(tasks)))
    elapsed = time.perf_counter() - started
    await aclose_brokers()
    return elapsed


def sync_run(task, tasks: int) -> float:
    task.enqueue(-1)
    started = time.perf_counter()
    for i in range(tasks):
        task.enqueue(i)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bgtasks-bench-")
    redis_proc, url = start_redis(workdir)
    os.environ.update({"BGTASKS_REDIS_URL": url, "DJANGO_SETTINGS_MODULE": "bench_settings"})
    sys.path[:0] = [str(HERE), str(ROOT)]
    import django

    django.setup()
    import redis
    from benchapp import tasks

    flush = redis.Redis.from_url(url)
    try:
        rates: dict[str, list[float]] = {"aenqueue": [], "enqueue": []}
        for run in range(opts.runs):
            flush.flushall()
            elapsed = asyncio.run(async_run(tasks.noop, opts.tasks, opts.in_flight))
            rates["aenqueue"].append(opts.tasks / elapsed)
            flush.flushall()
            rates["enqueue"].append(opts.tasks / sync_run(tasks.noop, opts.tasks))
            print(f"run {run + 1}: aenqueue {rates['aenqueue'][-1]:,.0f} tasks/s, "
                  f"enqueue {rates['enqueue'][-1]:,.0f} tasks/s", file=sys.stderr)
        for name, label in (("aenqueue", f"{opts.in_flight} in flight, one event loop"),
                            ("enqueue", "one at a time, sync")):
            print(f"{name}: {opts.tasks:,} tasks ({label}): median of {opts.runs} runs "
                  f"{statistics.median(rates[name]):,.0f} tasks/s")
    finally:
        flush.close()
        stop_redis(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
