"""Admin list-page cost with few and with many dead tasks.

    python bench/admin_pages.py [--big 100000] [--small 100] [--repeat 20]

Starts a private redis-server, seeds two queues with dead tasks through the real scripts
(enqueue, claim, dead ack), then renders the dead-task list page of each queue with
Django's test client (server-side time: request in, HTML out), first page and a middle
page. A page reads one ZRANGE and one HMGET per hash, so its cost must not grow with the
queue: the ratio big/small is the figure that matters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "testproject"), str(ROOT)]

from throughput import start_redis  # noqa: E402


def seed_dead(queue: str, count: int) -> None:
    from demo.tasks import fail_always
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.redis import Ack

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    opts = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bgtasks-admin-bench-")
    redis_proc, url = start_redis(workdir)
    os.environ.update(BGTASKS_REDIS_URL=url, DJANGO_SETTINGS_MODULE="testproject.settings",
                      BGTASKS_DEMO_DB=os.path.join(workdir, "db.sqlite3"))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    settings.BGTASKS = {**settings.BGTASKS, "DEAD_MAX_TASKS": 10**9}
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.LOGGING_CONFIG = None
    try:
        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_superuser("bench", "b@example.com", "x")
        started = time.perf_counter()
        seed_dead("small", opts.small)
        seed_dead("big", opts.big)
        print(f"seeded {opts.small:,} + {opts.big:,} dead tasks in "
              f"{time.perf_counter() - started:.1f}s")
        client = Client()
        client.force_login(user)
        base = reverse("admin:django_bgtasks_task_list", args=["dead"])
        rows = []
        for queue, size in (("small", opts.small), ("big", opts.big)):
            for page in sorted({1, max(1, size // 50 // 2)}):
                med, lo, hi = median_ms(client, f"{base}?queue={queue}&page={page}",
                                        opts.repeat)
                rows.append((f"{size:,} dead, page {page}", med, lo, hi))
        print("| dead list | median ms | min-max ms |")
        print("|---|---|---|")
        for label, med, lo, hi in rows:
            print(f"| {label} | {med:.1f} | {lo:.1f}-{hi:.1f} |")
        print(f"ratio big/small (first page): {rows[2][1] / rows[0][1]:.2f}")
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


if __name__ == "__main__":
    main()
