"""What a Prometheus scrape costs (issue 19): Redis commands, Redis time, wall time and
response size, with 1,000 and with 1,000,000 tasks.

    python bench/metrics_scrape.py [--tasks 1000000] [--scrapes 20] [--json PATH]

One private redis-server (no persistence, free port), used in this process through the
bench's Django settings (bench/bench_settings.py). For each size: the default queue gets
that many pending tasks (``enqueue_many``, 10,000 a call) and, in "other", 10,000 runs that
succeeded, 1,000 dead and 100 still active (claimed and acknowledged as a worker does,
so the metrics hash holds real counters and histograms), and one worker's heartbeat. Then
``--scrapes`` scrapes (``django_bgtasks.metrics.collector.exposition``, what the
/metrics view and ``bgtasks metrics`` serve) and as many autoscaling reads, after a
``CONFIG RESETSTAT``: Redis' INFO commandstats gives the commands and the time Redis spent
per scrape; wall times are medians. Writes bench/out/metrics_scrape.json (and prints a
table). Takes about a minute at 1,000,000 tasks; it stops the server it started.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, ROOT, start_redis, stop_redis

OUT = HERE / "out" / "metrics_scrape.json"
BATCH = 10_000
LEASE_MS = 600_000


def setup_django(url: str) -> None:
    sys.path[:0] = [str(HERE), str(ROOT)]
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_settings"
    os.environ["BGTASKS_REDIS_URL"] = url
    import django

    django.setup()


def fill(pending: int, ran: int) -> None:
    """``pending`` tasks in "default"; in "other", ``ran`` succeeded, ran/10 dead and
    ran/100 active; one live worker."""
    from benchapp.tasks import incr, noop

    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    broker = get_broker()
    for start in range(0, pending, BATCH):
        noop.enqueue_many(((i,), {}) for i in range(start, min(start + BATCH, pending)))
    other = incr.using(queue_name="other")
    for outcome, n in (("done", ran), ("dead", ran // 10), (None, ran // 100)):
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            other.enqueue_many(((i,), {}) for i in range(size))
            claimed = broker.claim("other", "bench", [], size, LEASE_MS, 10**6, 10**12).claimed
            if outcome:
                acks = [Ack(c.id, c.attempt, outcome, error="E") for c in claimed]
                broker.claim("other", "bench", acks, 0, LEASE_MS, 10**6, 10**12)
    broker.heartbeat_worker("bench-worker", {
        "host": "bench", "pid": "1", "queues": "default:1,other:1", "processes": "2",
        "threads": "8", "started": f"{time.time():.3f}", "in_flight": str(ran // 100)},
        ttl=600)


def measure(scrapes: int) -> dict:
    from django_bgtasks.broker import get_broker
    from django_bgtasks.metrics.collector import exposition
    from django_bgtasks.metrics.readings import autoscale_data

    broker = get_broker()
    client = broker.client
    result: dict = {}
    for what, read in (("scrape", lambda: exposition(broker)),
                       ("autoscale", lambda: json.dumps(autoscale_data(broker)).encode())):
        read()  # connections open, scripts loaded
        client.config_resetstat()
        walls, size = [], 0
        for _ in range(scrapes):
            began = time.perf_counter()
            size = len(read())
            walls.append(time.perf_counter() - began)
        stats = client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): data["calls"] / scrapes
                 for name, data in stats.items() if name not in ("cmdstat_config|resetstat",)}
        usec = sum(data["usec"] for name, data in stats.items()
                   if name != "cmdstat_config|resetstat") / scrapes
        result[what] = {"commands": sum(calls.values()), "by_command": calls,
                        "redis_ms": round(usec / 1000, 3),
                        "wall_ms": round(statistics.median(walls) * 1000, 2),
                        "wall_ms_max": round(max(walls) * 1000, 2), "bytes": size}
    result["redis_memory_mb"] = round(client.info("memory")["used_memory"] / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        proc, url = start_redis(workdir)
        try:
            setup_django(url)
            runs = []
            for pending in (1_000, args.tasks):
                from django_bgtasks.broker import get_broker

                get_broker().client.flushall()
                began = time.perf_counter()
                fill(pending, 10_000)
                print(f"filled {pending:,} pending in {time.perf_counter() - began:.0f}s",
                      flush=True)
                runs.append({"pending": pending, **measure(args.scrapes)})
        finally:
            stop_redis(proc)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"scrapes": args.scrapes, "runs": runs}, indent=1) + "\n")
    print(f"{'pending':>10} {'read':>9} {'commands':>8} {'redis ms':>8} {'wall ms':>8} "
          f"{'bytes':>7}")
    for run in runs:
        for what in ("scrape", "autoscale"):
            r = run[what]
            print(f"{run['pending']:>10,} {what:>9} {r['commands']:>8.0f} {r['redis_ms']:>8.3f} "
                  f"{r['wall_ms']:>8.2f} {r['bytes']:>7,}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
