"""One producer process for one system (bench/run.py starts it; one system per process).

    python bench/producer.py SYSTEM enqueue --tasks N [--many] [--label L]
    python bench/producer.py SYSTEM latency --pickup-seconds S --scheduled K [--delay 2]

SYSTEM is a module of bench/peers/ without ``_app`` (bgtasks, huey, dramatiq, celery, rq).
``enqueue`` sends N ``incr(i)`` one at a time with the system's natural API (``--many``:
ours' ``enqueue_many`` in batches of 1,000) and times it. ``latency`` sends a ``stamp``
every 10 ms for S seconds, then K stamps due ``--delay`` seconds out. Progress goes to
stderr once a second; the figures go to stdout as one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

BATCH = 1_000


class Progress:
    """Prints ``label: what done/total`` to stderr at most once a second."""

    def __init__(self, label: str, what: str, total: int) -> None:
        self.label, self.what, self.total = label, what, total
        self.next = time.perf_counter() + 1.0

    def tick(self, done: int) -> None:
        now = time.perf_counter()
        if now >= self.next:
            self.next = now + 1.0
            print(f"  {self.label}: {self.what} {done:,}/{self.total:,}", file=sys.stderr,
                  flush=True)


def check_deadline(deadline: float) -> None:
    if time.perf_counter() > deadline:
        raise SystemExit("producer: timed out")


def enqueue(app, tasks: int, many: bool, label: str, deadline: float) -> dict:
    progress = Progress(label, "enqueued", tasks)
    if many:
        items = [((i,), {}) for i in range(tasks)]
        started = time.perf_counter()
        infos = []
        for start in range(0, tasks, BATCH):
            result = app.send_many(items[start:start + BATCH])
            if result is None:
                return {"tasks": tasks, "unavailable": "enqueue_many is not in this checkout"}
            infos.extend(result)
            progress.tick(len(infos))
            check_deadline(deadline)
        elapsed = time.perf_counter() - started
        if len(infos) != tasks or not app.check_enqueued(infos[-1]):
            raise SystemExit(f"enqueue_many returned {len(infos)} TaskInfos for {tasks} "
                             f"tasks, or the last one is not pending")
        return {"tasks": tasks, "seconds": elapsed, "rate": tasks / elapsed}
    send = app.send
    started = time.perf_counter()
    for i in range(tasks):
        send(i)
        if not i & 255:
            progress.tick(i)
            check_deadline(deadline)
    elapsed = time.perf_counter() - started
    return {"tasks": tasks, "seconds": elapsed, "rate": tasks / elapsed}


def latency(app, pickup_seconds: float, interval: float, scheduled: int, delay: float,
            label: str, deadline: float) -> dict:
    count = round(pickup_seconds / interval)
    progress = Progress(label, "pickup tasks sent", count)
    started = time.perf_counter()
    for k in range(count):
        wait = started + k * interval - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        app.send_stamp("pickup", time.time())
        progress.tick(k + 1)
        check_deadline(deadline)
    sent_late = time.perf_counter() - started - (count - 1) * interval
    for _ in range(scheduled):
        app.send_due(time.time() + delay, delay)
    return {"pickup": count, "scheduled": scheduled, "pickup_send_overrun_s": sent_late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system")
    parser.add_argument("phase", choices=["enqueue", "latency"])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--many", action="store_true")
    parser.add_argument("--pickup-seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--scheduled", type=int, default=200)
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--label", default="")
    opts = parser.parse_args()

    deadline = time.perf_counter() + opts.timeout
    app = importlib.import_module(f"peers.{opts.system}_app")
    if opts.phase == "enqueue":
        figures = enqueue(app, opts.tasks, opts.many, opts.label or opts.system, deadline)
    else:
        figures = latency(app, opts.pickup_seconds, opts.interval, opts.scheduled, opts.delay,
                          opts.label or opts.system, deadline)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
