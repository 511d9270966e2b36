"""The admin's "Run all" / "Delete all" over many dead tasks: how long the confirmed POST
takes, and how long a real worker takes to run the bulk job it queues.

    python bench/bulk_jobs.py [--tasks 100000] [--action requeue_all|delete_all]
                              [--batch 500] [--json PATH]

Starts a private redis-server, seeds N dead tasks in queue "bench" through the real
scripts (enqueue, claim, dead ack), then POSTs the confirmed action with Django's test
client (server-side time: request in, response out). If the POST queued a job (issue 13),
it starts `manage.py runbackground --queues bench --processes 1 --threads 1` and reports
the job's own time (started_at to finished_at, Redis' clock) and the time from the POST
to "done", the worker's start-up included. The queue is paused, so requeued tasks stay
pending and are counted. It times whichever tree it sits in: copied into an older
checkout, it times that tree's POST (which moved the tasks itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import ROOT, start_redis, stop_redis

sys.path[:0] = [str(ROOT / "testproject"), str(ROOT)]

QUEUE = "bench"
WORKER_SETTINGS = """\
from testproject.settings import *  # noqa: F403

# The worker's janitor must not trim the seeded dead tasks (10,000 by default).
BGTASKS = {**BGTASKS, "DEAD_MAX_TASKS": 10**9, "BULK_BATCH": %d}  # noqa: F405
"""


def setup_django(redis_url: str, workdir: str) -> None:
    os.environ.update(BGTASKS_REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="testproject.settings",
                      BGTASKS_DEMO_DB=os.path.join(workdir, "db.sqlite3"))
    import django

    django.setup()
    from django.conf import settings

    settings.BGTASKS = {**settings.BGTASKS, "DEAD_MAX_TASKS": 10**9, "ENQUEUE_ON_COMMIT": False}
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.LOGGING_CONFIG = None


def seed_dead(count: int) -> float:
    from demo.tasks import fail_always
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    started = time.perf_counter()
    broker = get_broker()
    task = fail_always.using(queue_name=QUEUE, max_retries=0)
    for start in range(0, count, 1000):
        task.enqueue_many(([f"t{i}"], {}) for i in range(start, min(count, start + 1000)))
    while claimed := broker.claim(QUEUE, "bench", [], 500, 60_000, 10**9, 10**12).claimed:
        broker.claim(QUEUE, "bench", [Ack(c.id, c.attempt, "dead", error="ValueError: boom")
                                      for c in claimed], 0, 60_000, 10**9, 10**12)
    assert broker.counts(QUEUE)["dead"] == count
    return time.perf_counter() - started


def post(action: str) -> tuple[float, int]:
    """The confirmed POST: (seconds, status code)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    call_command("migrate", verbosity=0)
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("bench", "b@example.com", "x"))
    url = reverse("admin:django_bgtasks_task_action")
    started = time.perf_counter()
    response = client.post(url, {"action": action, "queue": QUEUE, "state": "dead",
                                 "post": "yes"})
    return time.perf_counter() - started, response.status_code


def run_job(workdir: str, redis_url: str, batch: int, posted_at: float) -> dict:
    """Start a worker and wait for the queued job to end; its figures."""
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.bulk import BulkJobStore

    (open(os.path.join(workdir, "bench_bulk_settings.py"), "w")
     .write(WORKER_SETTINGS % batch))
    env = {**os.environ, "BGTASKS_REDIS_URL": redis_url,
           "DJANGO_SETTINGS_MODULE": "bench_bulk_settings",
           "PYTHONPATH": os.pathsep.join([workdir, str(ROOT / "testproject"), str(ROOT)])}
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "testproject" / "manage.py"), "runbackground", "--queues",
         QUEUE, "--processes", "1", "--threads", "1"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "worker.log"), "w"),
        process_group=0)
    store = BulkJobStore(get_broker())
    polls = running_polls = 0
    try:
        while True:
            [job] = store.jobs([QUEUE])
            polls += 1
            running_polls += job.status == "running"
            if job.status in ("done", "failed"):
                break
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited ({worker.returncode}); see worker.log")
            time.sleep(0.05)
        end_to_end = time.perf_counter() - posted_at
    finally:
        worker.terminate()
        worker.wait(30)
    return {"status": job.status, "done": job.done, "total": job.total,
            "job_seconds": (job.finished_at - job.started_at).total_seconds(),
            "post_to_done_seconds": end_to_end, "polls_seeing_it_run": running_polls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--action", choices=["requeue_all", "delete_all"],
                        default="requeue_all")
    parser.add_argument("--batch", type=int, default=500, help="BULK_BATCH for the worker")
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bgtasks-bulk-bench-")
    redis_proc, url = start_redis(workdir)
    try:
        setup_django(url, workdir)
        from django_bgtasks.broker import get_broker

        seeded = seed_dead(opts.tasks)
        get_broker().pause(QUEUE)
        print(f"seeded {opts.tasks:,} dead tasks in {seeded:.1f}s", flush=True)
        posted_at = time.perf_counter()
        seconds, status = post(opts.action)
        counts = get_broker().counts(QUEUE)
        figures = {"tasks": opts.tasks, "action": opts.action, "post_seconds": seconds,
                   "post_status": status, "dead_after_post": counts["dead"]}
        print(f"POST {opts.action}: {status} in {seconds * 1000:.1f} ms; dead tasks left "
              f"after it: {counts['dead']:,}", flush=True)
        try:
            from django_bgtasks.broker.bulk import BulkJobStore  # noqa: F401
        except ImportError:
            print("(this tree has no bulk jobs: the request did the work)")
        else:
            job = run_job(workdir, url, opts.batch, posted_at)
            figures.update(job, batch=opts.batch)
            after = get_broker().counts(QUEUE)
            print(f"job {job['status']}: {job['done']:,} of {job['total']:,} in "
                  f"{job['job_seconds']:.2f}s (Redis' clock), {job['post_to_done_seconds']:.2f}s "
                  f"from the POST with the worker's start-up; dead {after['dead']:,}, pending "
                  f"{after['pending']:,}")
        if opts.json:
            with open(opts.json, "w") as out:
                json.dump(figures, out, indent=1)
    finally:
        stop_redis(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
