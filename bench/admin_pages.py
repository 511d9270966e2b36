"""Admin list-page cost with few and with many dead tasks.

    python bench/admin_pages.py [--big 100000] [--small 100] [--repeat 20]
                                [--redis-url URL] [--json PATH]

Starts a private redis-server (or uses --redis-url, which it fills: give it an empty
database), seeds two queues with dead tasks through the real scripts (enqueue, claim, dead
ack), then renders the dead-task list page of each queue with Django's test client
(server-side time: request in, HTML out), first page and a middle page. A page reads one
ZRANGE and one HMGET per hash, so its cost must not grow with the queue: the ratio
big/small is the figure that matters. bench/run.py runs this in a child process (it needs
the test project's settings, and a process sets up Django once) and reads --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from common import ROOT, start_redis, stop_redis

sys.path[:0] = [str(ROOT / "testproject"), str(ROOT)]


def seed_dead(queue: str, count: int) -> None:
    from demo.tasks import fail_always
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    broker = get_broker()
    task = fail_always.using(queue_name=queue, max_retries=0)
    for i in range(count):
        task.enqueue(f"{queue}-{i}")
    while True:
        claimed = broker.claim(queue, "bench", [], 500, 60_000, 10**9, 10**12).claimed
        if not claimed:
            return
        acks = [Ack(c.id, c.attempt, "dead", error="ValueError: boom", traceback="Traceback")
                for c in claimed]
        broker.claim(queue, "bench", acks, 0, 60_000, 10**9, 10**12)


def median_ms(client, url: str, repeat: int) -> tuple[float, float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times), min(times), max(times)


def setup_django(redis_url: str, workdir: str) -> None:
    os.environ.update(BGTASKS_REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="testproject.settings",
                      BGTASKS_DEMO_DB=os.path.join(workdir, "db.sqlite3"))
    import django

    django.setup()
    from django.conf import settings

    settings.BGTASKS = {**settings.BGTASKS, "DEAD_MAX_TASKS": 10**9}
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.LOGGING_CONFIG = None


def measure(small: int, big: int, repeat: int) -> dict:
    """Seed, render, and return the rows {label, dead, page, median_ms, min_ms, max_ms}."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "b@example.com", "x")
    started = time.perf_counter()
    seed_dead("small", small)
    seed_dead("big", big)
    seeded = time.perf_counter() - started
    print(f"seeded {small:,} + {big:,} dead tasks in {seeded:.1f}s", flush=True)
    client = Client()
    client.force_login(user)
    base = reverse("admin:django_bgtasks_task_list", args=["dead"])
    rows = []
    for queue, size in (("small", small), ("big", big)):
        for page in sorted({1, max(1, size // 50 // 2)}):
            med, lo, hi = median_ms(client, f"{base}?queue={queue}&page={page}", repeat)
            rows.append({"label": f"{size:,} dead, page {page:,}", "dead": size, "page": page,
                         "median_ms": med, "min_ms": lo, "max_ms": hi})
    return {"rows": rows, "repeat": repeat, "seed_seconds": seeded,
            "ratio_first_page": rows[2]["median_ms"] / rows[0]["median_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--redis-url", help="use this (empty) Redis instead of starting one")
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bgtasks-admin-bench-")
    redis_proc = None
    url = opts.redis_url
    if url is None:
        redis_proc, url = start_redis(workdir)
    try:
        setup_django(url, workdir)
        figures = measure(opts.small, opts.big, opts.repeat)
        print("| dead list | median ms | min-max ms |")
        print("|---|---|---|")
        for row in figures["rows"]:
            print(f"| {row['label']} | {row['median_ms']:.1f} | "
                  f"{row['min_ms']:.1f}-{row['max_ms']:.1f} |")
        print(f"ratio big/small (first page): {figures['ratio_first_page']:.2f}")
        if opts.json:
            with open(opts.json, "w") as out:
                json.dump(figures, out, indent=1)
    finally:
        if redis_proc is not None:
            stop_redis(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
