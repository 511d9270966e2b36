"""What workflows cost (issue 18): a group's enqueue, and the barrier's share of throughput.

    bench/.venv/bin/python bench/workflows.py [--n N] [--reps 3] [--quick] [--json PATH]

One private redis-server (no persistence, free port); FLUSHALL before every sample; per
repetition, each scenario of a phase in turn, the order rotated from one repetition to the
next (so that a load change on the machine hits every scenario alike):

- enqueue (100,000 calls): ``group(mark.s(i) for i in range(N)).enqueue()`` against
  ``mark.enqueue_many(((i,), {}) for i in range(N))``, each timed whole (building the
  calls included) in a fresh producer process: tasks/s.
- process (20,000 tasks): the same N ``mark`` tasks enqueued as plain tasks
  (``enqueue_many``), as one group (no callback) and as a chord (the group and a ``mark``
  callback, which gets the N results); then ``runbackground --processes 2`` (8 threads,
  logging at WARNING: bench/bench_settings.py) runs them. tasks/s = N over the time from
  the first task's start to the last end: the last task body, or for a workflow the
  barrier's ``finished`` (every member counted; a chord's callback ran) when later. Each
  body writes its time to ``bench:span`` (ZADD LT/GT) with the peers' INCR, in one round
  trip (bench/peers/work.py). Also: tasks/s with worker start-up included, and Redis'
  calls and CPU a task (INFO commandstats / cpu over the run, this script's polling
  subtracted).

``group / plain`` is the median of the repetitions' ratios (each rep's scenarios ran side
by side); the issue's target is a barrier costing <= 10 % of process throughput (a ratio
>= 0.90). ``--n`` sets both sizes; ``--quick``: 2,000 to process, 10,000 to enqueue, one
repetition (a smoke run). Writes bench/out/workflows.json (``--json PATH`` elsewhere) and
prints a table. Everything it starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import redis
from common import HERE, ROOT
from limits import commandstats, redis_cpu, summary
from peers.work import COUNTER, SPAN
from run import WorkerGroup, bench_redis, log, record, run_child, save

OUT = HERE / "out"
ENQUEUE = ("group", "many")  # producer kinds timed in the enqueue phase
PROCESS = {"plain": "many", "group": "group", "chord": "chord"}  # scenario -> producer kind
WHAT = {
    "enqueue group": "`group(mark.s(i) for i in range(N)).enqueue()`",
    "enqueue many": "`mark.enqueue_many(((i,), {}) for i in range(N))`",
    "plain": "N plain tasks (enqueue_many)",
    "group": "one group of N, no callback",
    "chord": "chord(group of N, mark.s())",
}


def produce(kind: str, n: int) -> None:
    """The producer child: enqueue n ``mark`` calls as ``kind``; prints one JSON line."""
    import django

    django.setup()
    from benchworkflows.tasks import mark

    import django_bgtasks
    from django_bgtasks import chord, group
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.keys import WorkflowKeys
    from django_bgtasks.conf import get_settings

    started = time.perf_counter()
    workflow = None
    if kind == "many":
        mark.enqueue_many(((i,), {}) for i in range(n))
    elif kind == "group":
        workflow = group(mark.s(i) for i in range(n)).enqueue().id
    else:
        workflow = chord(group(mark.s(i) for i in range(n)), mark.s()).enqueue().id
    elapsed = time.perf_counter() - started
    pending = get_broker().counts(mark.queue_name)["pending"]
    if pending != n:
        raise SystemExit(f"{kind}: {pending:,} pending after enqueueing {n:,}")
    barrier = WorkflowKeys(get_settings().PREFIX, workflow).barrier if workflow else None
    print(json.dumps({"seconds": elapsed, "rate": n / elapsed, "barrier": barrier,
                      "expected": n + (kind == "chord"),
                      "code": str(Path(django_bgtasks.__file__).parent.parent)}), flush=True)


def rotated(items: list[str], rep: int) -> list[str]:
    shift = (rep - 1) % len(items)
    return items[shift:] + items[:shift]


class Bench:
    def __init__(self, opts: argparse.Namespace, url: str, env: dict) -> None:
        self.opts, self.env = opts, env
        self.r = redis.Redis.from_url(url)

    def producer(self, kind: str, n: int) -> dict:
        self.r.flushall()
        out = run_child([sys.executable, str(HERE / "workflows.py"), "--produce", kind,
                         "--n", str(n)], self.env, 60 + n / 200)
        produced = json.loads(out.strip().splitlines()[-1])
        if Path(produced["code"]).resolve() != ROOT.resolve():
            raise RuntimeError(f"{kind} ran {produced['code']}, not {ROOT}")
        return produced

    def enqueue(self, kind: str, rep: int) -> dict:
        n = self.opts.enqueue_n
        produced = self.producer(kind, n)
        log(f"enqueue {kind} {rep}/{self.opts.reps}: {n:,} in {produced['seconds']:.2f}s: "
            f"{produced['rate']:,.0f} tasks/s")
        return {"scenario": f"enqueue {kind}", "rep": rep, "tasks": n,
                "rate": produced["rate"], "load": os.getloadavg()[0]}

    def process(self, scenario: str, rep: int) -> dict:
        n, label = self.opts.n, f"{scenario} {rep}/{self.opts.reps}"
        produced = self.producer(PROCESS[scenario], n)
        self.r.config_resetstat()
        cpu = redis_cpu(self.r)
        logfile = OUT / "logs" / f"workflows-{scenario}-{rep}.log"
        launched = time.perf_counter()
        workers = WorkerGroup([[sys.executable, "-m", "django", "runbackground",
                                "--processes", "2"]], self.env, logfile)
        try:
            done, own = self.wait(workers, produced, label)
        finally:
            workers.stop()
        calls = commandstats(self.r)
        for name, k in own.items():
            calls[name] = calls.get(name, 0) - k
        calls["info"] = calls.get("info", 1) - 1  # redis_cpu's, at the start
        calls["config"] = calls.get("config", 1) - 1  # CONFIG RESETSTAT itself
        sample = {"scenario": scenario, "rep": rep, "tasks": n, "load": os.getloadavg()[0],
                  "wall_rate": n / (done - launched),
                  "calls_per_task": sum(v for v in calls.values() if v > 0) / n,
                  "redis_cpu_us_per_task": (redis_cpu(self.r) - cpu) / n * 1e6,
                  "calls": dict(sorted(((k, v) for k, v in calls.items() if v > 0),
                                       key=lambda kv: -kv[1]))}
        sample.update(self.span(produced["barrier"]))
        sample["rate"] = n / sample["seconds"]
        log(f"{label}: {sample['rate']:,.0f} tasks/s first start to last end "
            f"({sample['seconds']:.2f}s; {sample['wall_rate']:,.0f}/s with start-up), "
            f"{sample['calls_per_task']:.1f} Redis calls and "
            f"{sample['redis_cpu_us_per_task']:.0f} µs of Redis CPU a task, "
            f"load {sample['load']:.2f}")
        return sample

    def wait(self, workers: WorkerGroup, produced: dict, label: str,
             ) -> tuple[float, dict[str, int]]:
        """Poll every 10 ms until every task ran and the barrier (if any) says succeeded;
        (when, this script's own Redis calls by command)."""
        expected, barrier = produced["expected"], produced["barrier"]
        own = {"get": 0, "hget": 0}
        deadline = time.perf_counter() + 60 + expected / 50
        last_change, last_count = time.perf_counter(), -1
        while True:
            count = int(self.r.get(COUNTER) or 0)
            own["get"] += 1
            state = b"succeeded"
            if barrier and count >= expected:
                state = self.r.hget(barrier, "state") or b"?"
                own["hget"] += 1
            now = time.perf_counter()
            if count >= expected and state == b"succeeded":
                return now, own
            if state in (b"failed", b"cancelled"):
                raise RuntimeError(f"{label}: the workflow ended {state.decode()}")
            if count != last_count:
                last_change, last_count = now, count
            problem = workers.dead()
            if problem is None and now > deadline:
                problem = "out of time"
            if problem is None and now - last_change > 30:
                problem = f"stuck for 30s (barrier {state.decode()})"
            if problem:
                raise RuntimeError(f"{label}: {problem} ({count:,}/{expected:,} ran)")
            time.sleep(0.01)

    def span(self, barrier: str | None) -> dict:
        first, last = (self.r.zscore(SPAN, k) for k in ("first", "last"))
        if first is None or last is None:
            raise RuntimeError(f"no task wrote {SPAN}")
        figures = {"seconds": last - first}
        if barrier:  # the barrier's own end, on Redis' clock (this host's)
            finished = int(self.r.hget(barrier, "finished")) / 1000
            figures["barrier_after_last_ms"] = (finished - last) * 1000
            figures["seconds"] = max(last, finished) - first
        return figures


def paired_ratios(samples: list[dict], top: str, bottom: str) -> list[float]:
    """Per repetition: ``top``'s rate over ``bottom``'s (they ran side by side)."""
    by = {(s["scenario"], s["rep"]): s.get("rate") for s in samples}
    return [by[top, rep] / by[bottom, rep] for (sc, rep), rate in by.items()
            if sc == bottom and rate and by.get((top, rep))]


def med(samples: list[dict], key: str, fmt: str = ",.0f") -> str:
    s = summary([x.get(key) for x in samples])
    if s is None:
        return ""
    if s["min"] == s["max"]:
        return f"{s['median']:{fmt}}"
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def ratio(samples: list[dict], top: str, bottom: str) -> str:
    s = summary(paired_ratios(samples, top, bottom))
    return "" if s is None else f"{s['median']:.2f}"


def table(results: dict) -> str:
    samples = [s for s in results["samples"] if "error" not in s]
    o = results["options"]
    rows = [f"Enqueue, {o['enqueue_n']:,} calls (tasks/s, median (min-max) of {o['reps']}):",
            "", "| scenario | tasks/s | vs enqueue_many |", "|---|---|---|"]
    for kind in ENQUEUE:
        key = f"enqueue {kind}"
        mine = [s for s in samples if s["scenario"] == key]
        rows.append(f"| {WHAT[key]} | {med(mine, 'rate')} | "
                    f"{ratio(samples, key, 'enqueue many')} |")
    rows += ["", f"Process, {o['n']:,} tasks, `runbackground --processes 2` (8 threads):", "",
             "| scenario | tasks/s, first start to last end | vs plain | tasks/s with "
             "start-up | Redis calls/task | Redis CPU µs/task |", "|---|---|---|---|---|---|"]
    for sc in PROCESS:
        mine = [s for s in samples if s["scenario"] == sc]
        rows.append(f"| {sc}: {WHAT[sc]} | {med(mine, 'rate')} | {ratio(samples, sc, 'plain')} "
                    f"| {med(mine, 'wall_rate')} | {med(mine, 'calls_per_task', '.1f')} | "
                    f"{med(mine, 'redis_cpu_us_per_task', '.0f')} |")
    group = summary(paired_ratios(samples, "group", "plain"))
    if group:
        rows += ["", f"Barrier cost: a group runs at {group['median']:.2f} of plain "
                 f"throughput ({1 - group['median']:.1%} slower; the target is <= 10 %)."]
    errors = [s for s in results["samples"] if "error" in s]
    rows += [f"FAILED: {s['scenario']} {s['rep']}: {s['error']}" for s in errors]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int,
                        help="tasks (default 20,000 to process, 100,000 to enqueue)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 to process, 10,000 to enqueue, 1 repetition")
    parser.add_argument("--json", type=Path, default=OUT / "workflows.json")
    parser.add_argument("--produce", choices=["group", "many", "chord"], help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.produce:
        produce(opts.produce, opts.n)
        return
    opts.enqueue_n = opts.n or (10_000 if opts.quick else 100_000)
    opts.n = opts.n or (2_000 if opts.quick else 20_000)
    opts.reps = opts.reps or (1 if opts.quick else 3)

    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    with bench_redis(tempfile.mkdtemp(prefix="bgtasks-workflows-bench-")) as url:
        env = {**os.environ, "BENCH_REDIS_URL": url, "BGTASKS_REDIS_URL": url,
               "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "bench_workflows_settings",
               "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
        results: dict = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "options": {"n": opts.n, "enqueue_n": opts.enqueue_n, "reps": opts.reps,
                        "quick": opts.quick},
            "code": str(ROOT), "nproc": os.cpu_count(),
            "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                  capture_output=True, text=True).stdout.strip(),
            "scenarios": WHAT, "samples": [],
        }
        bench = Bench(opts, url, env)
        log(f"redis-server at {url}; {opts.reps} repetition(s): enqueue {opts.enqueue_n:,}, "
            f"process {opts.n:,}")
        for rep in range(1, opts.reps + 1):
            runs = [(f"enqueue {kind}", partial(bench.enqueue, kind, rep))
                    for kind in rotated(list(ENQUEUE), rep)]
            runs += [(sc, partial(bench.process, sc, rep)) for sc in rotated(list(PROCESS), rep)]
            for key, measure in runs:
                record(results["samples"], key, rep, measure)
        save(opts.json, results, table(results))


if __name__ == "__main__":
    main()
