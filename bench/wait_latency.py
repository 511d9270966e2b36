"""How soon get_result(wait=...) returns once a task ends (issue 17; target p50 <= 2 ms).

    python bench/wait_latency.py [--samples 2000] [--json PATH]

One private redis-server (no persistence, free port: run.bench_redis). Per sample: enqueue
a task of ``benchapp.tasks.noop`` and claim it (as a worker would); a waiter thread calls
``get_result(id, wait=10)`` and, once Redis holds its registration, the main thread
acknowledges the run 'done' (the claim call that ends it, result kept a minute).

What is timed: from just before that acknowledgement is sent (time.perf_counter()) to
the waiter's return with the completed TaskInfo (its XREAD woken by the end's stream
entry, the task's record read, the TaskInfo built). Both threads are of one process: the
acknowledging thread sits in its socket read while the waiter wakes. The rest of a
sample (enqueue, claim, registration) is not timed. Samples alternate between a waiter
on this thread's blocking client (sync) and one on asyncio (aget_result on its own
loop, in its thread). p50/p90/p99/max in ms, per kind, and of the acknowledging call's own
round trip (``ack_call``: sent to its reply, for scale); writes bench/out/wait_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from common import HERE, ROOT
from run import bench_redis, log

OUT = HERE / "out"


def setup_django(url: str) -> None:
    os.environ["BGTASKS_REDIS_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_settings")
    sys.path[:0] = [str(ROOT), str(HERE)]  # this checkout's django_bgtasks, benchapp
    import django

    django.setup()


class Waiter(threading.Thread):
    def __init__(self, task_id: str, kind: str) -> None:
        super().__init__(daemon=True)
        self.task_id, self.kind = task_id, kind
        self.returned = 0.0
        self.state = ""

    def run(self) -> None:
        from benchapp.tasks import noop

        if self.kind == "sync":
            info = noop.get_result(self.task_id, wait=10)
        else:
            info = asyncio.run(self._async())
        self.returned = time.perf_counter()
        self.state = info.state

    async def _async(self):
        from benchapp.tasks import noop

        from django_bgtasks.broker.aio import aclose_brokers

        try:
            return await noop.aget_result(self.task_id, wait=10)
        finally:
            await aclose_brokers()


def sample(kind: str) -> tuple[float, float]:
    """One sample: the waiter's latency and the acknowledging call's own (ms)."""
    from benchapp.tasks import noop

    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    broker = get_broker()
    task_id = noop.enqueue(0).id
    [claimed] = broker.claim("default", "bench", [], 1, 60_000, 1000, 10**9).claimed
    rwait = broker.queue_keys("default").rwait
    waiter = Waiter(task_id, kind)
    waiter.start()
    while not broker.client.hexists(rwait, task_id):
        time.sleep(0.0002)
    ack = Ack(task_id, claimed.attempt, "done", result="null", result_ttl_ms=60_000)
    sent = time.perf_counter()
    broker.claim("default", "bench", [ack], 0, 60_000, 1000, 10**9)
    acked = time.perf_counter()
    waiter.join(10)
    if waiter.state != "completed":
        raise RuntimeError(f"sample {task_id}: the waiter returned {waiter.state!r}")
    return (waiter.returned - sent) * 1000, (acked - sent) * 1000


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"samples": len(values), "p50_ms": round(statistics.median(values), 3),
            "p90_ms": pick(0.90), "p99_ms": pick(0.99), "max_ms": round(ordered[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="per kind (sync, async)")
    parser.add_argument("--json", type=Path, default=OUT / "wait_latency.json")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bgtasks-wait-bench-") as workdir, \
            bench_redis(workdir) as url:
        setup_django(url)
        for kind in ("sync", "async"):  # warm-up: connections, scripts loaded
            sample(kind)
        found: dict[str, list[float]] = {"sync": [], "async": [], "ack_call": []}
        for i in range(opts.samples * 2):
            kind = "sync" if i % 2 == 0 else "async"
            waited, acked = sample(kind)
            found[kind].append(waited)
            found["ack_call"].append(acked)
            if i and i % 1000 == 0:
                log(f"{i} samples")
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
              "load_average": os.getloadavg(), "cpus": os.cpu_count(),
              **{kind: summary(values) for kind, values in found.items()}}
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(result, indent=2) + "\n")
    for kind in found:
        s = result[kind]
        print(f"{kind:5}  p50 {s['p50_ms']:.3f} ms  p90 {s['p90_ms']:.3f} ms  "
              f"p99 {s['p99_ms']:.3f} ms  max {s['max_ms']:.3f} ms  ({s['samples']} samples)")


if __name__ == "__main__":
    main()
