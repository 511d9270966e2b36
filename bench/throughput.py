"""First rough throughput figures for django-bgtasks on this machine.

    python bench/throughput.py [--tasks 20000] [--processes 2] [--threads 8]

Starts a private redis-server on a free port, enqueues N tasks one at a time (tasks/s),
then starts ``runbackground`` and times until every task ran (tasks/s). The comparison
with peers belongs to the benchmark suite of the performance issue; this is a smoke figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from common import HERE, ROOT, start_redis, stop_redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--task", choices=["noop", "incr"], default="noop")
    opts = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bgtasks-bench-")
    redis_proc, url = start_redis(workdir)
    env = {**os.environ, "BGTASKS_REDIS_URL": url, "BENCH_REDIS_URL": url,
           "DJANGO_SETTINGS_MODULE": "bench_settings",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    os.environ.update(env)
    sys.path[:0] = [str(HERE), str(ROOT)]
    import django

    django.setup()
    from benchapp import tasks

    from django_bgtasks.broker import get_broker

    task = getattr(tasks, opts.task)
    broker = get_broker()
    try:
        started = time.perf_counter()
        for i in range(opts.tasks):
            task.enqueue(i)
        enqueue_rate = opts.tasks / (time.perf_counter() - started)
        print(f"enqueue: {opts.tasks} tasks one at a time: {enqueue_rate:,.0f} tasks/s")

        worker = subprocess.Popen(
            [sys.executable, "-m", "django", "runbackground", "--processes",
             str(opts.processes), "--threads", str(opts.threads)],
            env=env, start_new_session=True)
        started = time.perf_counter()
        while True:
            counts = broker.counts("default")
            left = counts["pending"] + counts["active"]
            if left == 0:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        print(f"process: {opts.tasks} {opts.task} tasks, --processes {opts.processes} "
              f"--threads {opts.threads}: {opts.tasks / elapsed:,.0f} tasks/s "
              f"({elapsed:.2f}s, including worker start-up)")
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    finally:
        stop_redis(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
