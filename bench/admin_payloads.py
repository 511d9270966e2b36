"""Admin list pages against big payloads (issue 13): 50 dead tasks of 2.7 MB each against
50 tiny ones.

    python bench/admin_payloads.py [--tasks 50] [--size 2700000] [--repeat 5]
                                   [--json PATH]

Starts a private redis-server, seeds three queues of dead tasks in a child process through
the real scripts (enqueue under a raised MAX_MESSAGE_BYTES, claim, dead ack): "tiny" (a
6-character argument), "big" (a --size argument) and "legacy" (the same, its records
rewritten without the message head an older version did not keep). Then, per queue, a
fresh child process renders that queue's dead list with Django's test client: warmed up
on the tiny list, it times --repeat renders (server side: request in, HTML out) and
reports how far its peak RSS rose above the warmed-up RSS (VmHWM after clear_refs) and
the bytes Redis sent per page (INFO total_net_output_bytes). Targets: big within 2x of
tiny, growth under 20 MB.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from admin_pages import setup_django
from common import start_redis, stop_redis

QUEUES = ("tiny", "big", "legacy")


def memory_kb() -> dict[str, int]:
    with open("/proc/self/status") as status:
        text = status.read()
    return {k: int(v) for k, v in re.findall(r"^(Vm\w+):\s+(\d+) kB", text, re.M)}


def seed(tasks: int, size: int) -> None:
    """Dead tasks in each queue; 'legacy' records lose their head, as before issue 13."""
    from django.conf import settings

    settings.BGTASKS = {**settings.BGTASKS, "MAX_MESSAGE_BYTES": 4 * size + 2**20,
                        "ENQUEUE_ON_COMMIT": False}
    from demo.tasks import fail_always
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    broker = get_broker()
    for queue in QUEUES:
        token = "x" * (6 if queue == "tiny" else size)
        task = fail_always.using(queue_name=queue, max_retries=0)
        for _ in range(tasks):
            task.enqueue(token)
        claimed = broker.claim(queue, "bench", [], tasks, 60_000, 10**9, 10**12).claimed
        acks = [Ack(c.id, c.attempt, "dead", error="ValueError: boom",
                    traceback="Traceback (most recent call last):\nValueError: boom")
                for c in claimed]
        broker.claim(queue, "bench", acks, 0, 60_000, 10**9, 10**12)
    keys = broker.queue_keys("legacy")
    for task_id, raw in broker.client.hgetall(keys.info).items():
        record = json.loads(raw)
        record.pop("head", None)
        broker.client.hset(keys.info, task_id, json.dumps(record))


def measure(queue: str, repeat: int) -> dict:
    """Render ``queue``'s dead list ``repeat`` times after a warm-up on the tiny one."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from django_bgtasks.broker import get_broker

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True})[0]
    client = Client()
    client.force_login(user)
    base = reverse("admin:django_bgtasks_task_list", args=["dead"])
    for _ in range(3):
        assert client.get(f"{base}?queue=tiny").status_code == 200
    redis = get_broker().client
    baseline = memory_kb()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS: the peak from here on
    sent_before = int(redis.info("stats")["total_net_output_bytes"])
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(f"{base}?queue={queue}")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        size = len(response.content)
    sent = int(redis.info("stats")["total_net_output_bytes"]) - sent_before
    return {"queue": queue, "median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times), "rss_growth_mb": (memory_kb()["VmHWM"] - baseline) / 1024,
            "redis_bytes_per_page": sent // repeat, "html_bytes": size}


def child(step: str, url: str, workdir: str, *args: str) -> str:
    command = [sys.executable, __file__, "--child", step, "--redis-url", url,
               "--workdir", workdir, *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--size", type=int, default=2_700_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        setup_django(opts.redis_url, opts.workdir)
        if opts.child == "seed":
            seed(opts.tasks, opts.size)
        else:
            print(json.dumps(measure(opts.child, opts.repeat)))
        return

    workdir = tempfile.mkdtemp(prefix="bgtasks-payload-bench-")
    redis_proc, url = start_redis(workdir)
    try:
        started = time.perf_counter()
        child("seed", url, workdir, "--tasks", str(opts.tasks), "--size", str(opts.size))
        print(f"seeded 3 x {opts.tasks} dead tasks in {time.perf_counter() - started:.1f}s",
              flush=True)
        rows = [json.loads(child(q, url, workdir, "--repeat", str(opts.repeat)))
                for q in QUEUES]
    finally:
        stop_redis(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)
    labels = {"tiny": f"{opts.tasks} tiny", "big": f"{opts.tasks} x {opts.size:,} B",
              "legacy": f"{opts.tasks} x {opts.size:,} B, no head (older records)"}
    print("| dead list | median ms | min-max ms | peak RSS growth | read from Redis | HTML |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {labels[row['queue']]} | {row['median_ms']:.1f} | {row['min_ms']:.1f}-"
              f"{row['max_ms']:.1f} | {row['rss_growth_mb']:.1f} MB | "
              f"{row['redis_bytes_per_page'] / 1024:,.0f} KB | "
              f"{row['html_bytes'] / 1024:,.0f} KB |")
    tiny = rows[0]["median_ms"]
    print(f"ratio big/tiny: {rows[1]['median_ms'] / tiny:.2f}; "
          f"legacy/tiny: {rows[2]['median_ms'] / tiny:.2f}")
    if opts.json:
        with open(opts.json, "w") as out:
            json.dump({"rows": rows, "tasks": opts.tasks, "size": opts.size,
                       "repeat": opts.repeat}, out, indent=1)


if __name__ == "__main__":
    main()
