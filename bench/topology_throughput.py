"""Throughput on one Redis against a 3-master Redis Cluster, queues spread over the masters.

    python bench/topology_throughput.py [--tasks 20000] [--queues 3] [--reps 3]

For each topology (one redis-server; a cluster of 3 masters + 3 replicas started from
tests/support/topologies/), the same queues (chosen so that on the cluster they land on every
master), the same tasks (noop), in the same run on this machine:
  - enqueue: one producer, one task at a time, round-robin over the queues (tasks/s);
  - enqueue_many: batches of 1,000 per queue (tasks/s);
  - process: `runbackground --queues q1,q2,q3 --processes P --threads T` until every task
    ran (tasks/s, worker start-up included, as bench/throughput.py does).
Medians over --reps. Figures go to stdout and --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, ROOT, start_redis, stop_redis

sys.path[:0] = [str(HERE), str(ROOT), str(ROOT / "tests" / "support")]


def setup_django(url: str) -> dict[str, str]:
    env = {**os.environ, "BGTASKS_REDIS_URL": url, "DJANGO_SETTINGS_MODULE": "bench_settings",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    os.environ.update(env)
    import django
    from django.conf import settings

    if not settings.configured or not hasattr(setup_django, "done"):
        django.setup()
        setup_django.done = True  # type: ignore[attr-defined]
    from django.test.utils import override_settings

    override_settings(BGTASKS={"REDIS_URL": url}).enable()
    return env


def measure(url: str, queues: list[str], opts: argparse.Namespace) -> dict[str, float]:
    env = setup_django(url)
    from benchapp import tasks

    from django_bgtasks.broker import get_broker

    broker = get_broker()
    n = opts.tasks
    started = time.perf_counter()
    for i in range(n):
        tasks.noop.using(queue_name=queues[i % len(queues)]).enqueue(i)
    one_at_a_time = n / (time.perf_counter() - started)
    drain(broker, queues, env, opts)  # empty again, and warms the worker code paths

    started = time.perf_counter()
    for q in queues:
        for start in range(0, n // len(queues), 1000):
            count = min(1000, n // len(queues) - start)
            tasks.noop.using(queue_name=q).enqueue_many([((i,), {}) for i in range(count)])
    many = (n // len(queues) * len(queues)) / (time.perf_counter() - started)
    process = (n // len(queues) * len(queues)) / drain(broker, queues, env, opts)
    return {"enqueue": one_at_a_time, "enqueue_many": many, "process": process}


def drain(broker, queues: list[str], env: dict[str, str], opts: argparse.Namespace) -> float:
    """Run a worker on the queues until all are empty; seconds taken."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "django", "runbackground", "--queues", ",".join(queues),
         "--processes", str(opts.processes), "--threads", str(opts.threads)],
        env=env, start_new_session=True)
    started = time.perf_counter()
    try:
        while True:
            left = 0
            for q in queues:
                counts = broker.counts(q)
                left += counts["pending"] + counts["active"]
            if left == 0:
                return time.perf_counter() - started
            time.sleep(0.02)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--queues", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "topology_throughput.json")
    opts = parser.parse_args()

    from topologies import RedisClusterTopology

    workdir = Path(tempfile.mkdtemp(prefix="bgtasks-topology-bench-"))
    cluster = RedisClusterTopology(workdir)
    cluster.start()
    redis_proc, single_url = start_redis(str(workdir))
    try:
        queues = cluster.queue_names_spread(opts.queues)
        masters = {q: cluster.master_for_key(f"bgtasks:{{{q}}}:pending") for q in queues}
        print(f"queues {queues} on cluster masters {sorted(set(masters.values()))}")
        runs: dict[str, list[dict[str, float]]] = {"one redis": [], "cluster 3 masters": []}
        for rep in range(opts.reps):
            for name, url in (("one redis", single_url), ("cluster 3 masters", cluster.url)):
                figures = measure(url, queues, opts)
                runs[name].append(figures)
                print(f"rep {rep + 1} {name}: " + ", ".join(
                    f"{k} {v:,.0f}/s" for k, v in figures.items()))
        summary = {name: {k: statistics.median(r[k] for r in reps) for k in reps[0]}
                   for name, reps in runs.items()}
        print(f"\nmedians of {opts.reps}, {opts.tasks:,} noop tasks over {len(queues)} queues, "
              f"worker {opts.processes} x {opts.threads}:")
        for name, figures in summary.items():
            print(f"  {name:18} " + "  ".join(f"{k} {v:>8,.0f}/s" for k, v in figures.items()))
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps({"queues": queues, "runs": runs, "medians": summary,
                                        "tasks": opts.tasks}, indent=2))
    finally:
        stop_redis(redis_proc)
        cluster.stop()


if __name__ == "__main__":
    main()
