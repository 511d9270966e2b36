"""What flow control (docs/limits.md) costs: throughput with and without limits (issue 16).

    bench/.venv/bin/python bench/limits.py [--tasks 20000] [--reps 3]
        [--tree before=/tmp/bench-before --tree after=/tmp/bench-after] [--only KEY,...]

One private redis-server (no persistence, free port). Per repetition, each scenario in
turn (so that a load change on the machine hits every scenario alike): FLUSHALL; enqueue
N tasks one at a time from a fresh producer process (tasks/s); start ``runbackground``
(own process group) and time until ``bench:counter`` reaches N (tasks/s, start-up
included, and from the first task seen run); Redis' INFO commandstats over that run
(``CONFIG RESETSTAT`` before the workers start; this script's own polling subtracted) and,
for the 1-ms scenarios, over 3 s of idle workers afterwards (a spinning claim would show).

Scenarios: ``incr`` (bench/benchapp) with no limit, on this checkout and on each
``--tree NAME=PATH`` (another checkout's django_bgtasks, e.g. from before flow control:
only the code under test changes, this bench stays); ``incr_wide`` (concurrency limit
1,000, never reached by 2 x 8 threads); ``incr_fair`` (1,000 fair_key values);
``sleep_1ms`` (1 ms, no limit, 2 processes x 2 threads: 4 runs at once at most) and
``sleep_1ms_limit4`` (1 ms, concurrency limit 4, 2 x 8 threads: 16 threads contend for
4 slots). Medians of the repetitions. Writes bench/out/limits.json (and prints a table);
``--json PATH`` writes elsewhere. Everything it starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from common import HERE, ROOT
from peers.work import COUNTER
from run import WorkerGroup, bench_redis, log, record, run_child, save

OUT = HERE / "out"
QUEUE_KEYS = "*:{default}:"  # the default queue's keys, whatever the prefix


@dataclass(frozen=True)
class Scenario:
    key: str
    task: str           # module:function, enqueued as ``task.enqueue(i)``
    threads: int = 8    # per worker process; 2 processes
    tree: str = "here"  # which checkout's django_bgtasks runs it
    what: str = ""


def scenarios(trees: dict[str, Path], limit_trees: set[str]) -> list[Scenario]:
    limited = [
        Scenario("incr_wide", "benchlimits.tasks:incr_wide",
                 what="concurrency_limit=1000, never reached"),
        Scenario("incr_fair", "benchlimits.tasks:incr_fair", what="fair_key: 1,000 values"),
        Scenario("sleep_1ms", "benchlimits.tasks:sleep_1ms", threads=2,
                 what="1 ms tasks, no limit, 2 x 2 threads (the reference)"),
        Scenario("sleep_1ms_limit4", "benchlimits.tasks:sleep_1ms_limit4",
                 what="1 ms tasks, concurrency_limit=4, 2 x 8 threads"),
    ]
    chosen = []
    for name, path in trees.items():
        chosen.append(Scenario(f"incr@{name}", "benchapp.tasks:incr", tree=name,
                               what=f"no limit ({name}: {path})"))
        if name in limit_trees:  # a checkout that has flow control
            chosen += [Scenario(f"{sc.key}@{name}", sc.task, sc.threads, name,
                                f"{sc.what} ({name})") for sc in limited]
    return [*chosen, Scenario("incr", "benchapp.tasks:incr", what="no limit"), *limited]


def child_env(base: dict, root: Path, settings: str) -> dict:
    # This bench's apps first, then the checkout under test (before the editable install).
    return {**base, "DJANGO_SETTINGS_MODULE": settings,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(root)])}


def produce(task_path: str, n: int) -> None:
    """The producer child: enqueue n tasks one at a time; prints one JSON line."""
    import django

    django.setup()
    import importlib

    import django_bgtasks

    module, name = task_path.split(":")
    task = getattr(importlib.import_module(module), name)
    started = time.perf_counter()
    for i in range(n):
        task.enqueue(i)
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "rate": n / elapsed,
                      "code": str(Path(django_bgtasks.__file__).parent.parent)}), flush=True)


def redis_cpu(r: redis.Redis) -> float:
    """CPU seconds the redis-server process has used (user + system)."""
    cpu = r.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def commandstats(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"]
            for k, v in r.info("commandstats").items()}


class Bench:
    def __init__(self, opts: argparse.Namespace, url: str, env: dict,
                 trees: dict[str, Path]) -> None:
        self.opts, self.url, self.env, self.trees = opts, url, env, trees
        self.r = redis.Redis.from_url(url)

    def run(self, sc: Scenario, rep: int) -> dict:
        n = self.tasks(sc)
        label = f"{sc.key} {rep}/{self.opts.reps}"
        root = self.trees.get(sc.tree, ROOT)
        # bench/benchlimits imports only on checkouts that have flow control.
        settings = ("bench_limits_settings" if sc.task.startswith("benchlimits")
                    else "bench_settings")
        env = child_env(self.env, root, settings)
        sample: dict = {"scenario": sc.key, "rep": rep, "tasks": n, "load": os.getloadavg()[0]}
        self.r.flushall()
        out = run_child([sys.executable, str(HERE / "limits.py"), "--produce", sc.task,
                         "--tasks", str(n)], env, 60 + n / 200)
        produced = json.loads(out.strip().splitlines()[-1])
        if Path(produced["code"]).resolve() != root.resolve():
            raise RuntimeError(f"{sc.key} ran {produced['code']}, not {root}")
        sample["enqueue"] = produced["rate"]
        self.r.config_resetstat()
        cpu = redis_cpu(self.r)
        logfile = OUT / "logs" / f"limits-{sc.key.replace('@', '-')}-{rep}.log"
        started = time.perf_counter()
        workers = WorkerGroup([[sys.executable, "-m", "django", "runbackground", "--processes",
                                "2", "--threads", str(sc.threads)]], env, logfile)
        try:
            sample.update(self.process(workers, started, sc, label))
            sample["redis_cpu_us_per_task"] = (redis_cpu(self.r) - cpu) / n * 1e6
            if sc.key.startswith("sleep_1ms"):
                self.r.config_resetstat()
                time.sleep(3)
                idle = commandstats(self.r)
                idle["info"] = idle.get("info", 1) - 1
                sample["idle_calls_per_s"] = sum(idle.values()) / 3
        finally:
            workers.stop()
        log(f"{label}: enqueue {sample['enqueue']:,.0f}/s, process {sample['process']:,.0f}/s "
            f"({sample['process_after_first']:,.0f}/s after the first), "
            f"{sample['calls_per_task']:.1f} Redis calls and "
            f"{sample['redis_cpu_us_per_task']:.0f} µs of Redis CPU a task, "
            f"load {sample['load']:.2f}"
            + (f", peak running {sample['peak_running']}" if "peak_running" in sample else "")
            + (f", idle {sample['idle_calls_per_s']:.0f} calls/s"
               if "idle_calls_per_s" in sample else ""))
        return sample

    def tasks(self, sc: Scenario) -> int:
        return (self.opts.saturated_tasks if sc.key.startswith("sleep_1ms_limit4")
                else self.opts.tasks)

    def process(self, workers: WorkerGroup, started: float, sc: Scenario, label: str) -> dict:
        """Poll every 10 ms until the counter reaches N: rates, Redis calls, peak running."""
        n = self.tasks(sc)
        limits_key = waiting_key = None
        if sc.task.startswith("benchlimits"):
            limits_key = next(iter(self.r.scan_iter(match=QUEUE_KEYS + "limits")), None)
            waiting_key = next(iter(self.r.scan_iter(match=QUEUE_KEYS + "waiting")), None)
        own: dict[str, int] = {"get": 0, "hgetall": 0, "zcard": 0}
        first, peak_running, peak_waiting = None, 0, 0
        last_change, last_count = started, 0
        while True:
            count = int(self.r.get(COUNTER) or 0)
            own["get"] += 1
            now = time.perf_counter()
            if count >= n:
                break
            if count and first is None:
                first = (now, count)
            if count != last_count:
                last_change, last_count = now, count
            if limits_key is None and sc.key.startswith("sleep_1ms_limit4"):
                limits_key = next(iter(self.r.scan_iter(match=QUEUE_KEYS + "limits")), None)
                waiting_key = next(iter(self.r.scan_iter(match=QUEUE_KEYS + "waiting")), None)
                own["scan"] = own.get("scan", 0) + 2
            if limits_key is not None:
                for raw in self.r.hgetall(limits_key).values():
                    peak_running = max(peak_running, int(json.loads(raw).get("run", 0)))
                peak_waiting = max(peak_waiting, self.r.zcard(waiting_key or b"-"))
                own["hgetall"] += 1
                own["zcard"] += 1
            problem = workers.dead()
            if problem is None and now - last_change > 30:
                problem = f"stuck at {count:,} for 30s"
            if problem:
                raise RuntimeError(f"{label}: {problem} ({count:,}/{n:,} ran)")
            time.sleep(0.01)
        elapsed = now - started
        calls = commandstats(self.r)
        for name, k in own.items():
            calls[name] = calls.get(name, 0) - k
        calls["info"] = calls.get("info", 1) - 1
        calls = {k: v for k, v in calls.items() if v > 0}
        figures = {"seconds": elapsed, "process": n / elapsed,
                   "process_after_first": (n - first[1]) / (now - first[0]) if first else None,
                   "calls_per_task": sum(calls.values()) / n,
                   "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1]))}
        if sc.key.startswith("sleep_1ms_limit4"):
            figures["peak_running"], figures["peak_waiting"] = peak_running, peak_waiting
        return figures


def summary(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(results: dict) -> str:
    rows = ["| scenario | enqueue/s | process/s | after first/s | Redis calls/task | "
            "Redis CPU µs/task | idle calls/s | load (1 min) |",
            "|---|---|---|---|---|---|---|---|"]
    for sc in results["scenarios"]:
        samples = [s for s in results["samples"] if s["scenario"] == sc["key"]]

        def med(k: str, fmt: str = ",.0f", samples=samples) -> str:
            s = summary([x.get(k) for x in samples])
            return "" if s is None else (f"{s['median']:{fmt}} ({s['min']:{fmt}}-"
                                         f"{s['max']:{fmt}})")
        rows.append(f"| {sc['key']}: {sc['what']} | {med('enqueue')} | {med('process')} | "
                    f"{med('process_after_first')} | {med('calls_per_task', '.1f')} | "
                    f"{med('redis_cpu_us_per_task', '.0f')} | "
                    f"{med('idle_calls_per_s')} | {med('load', '.2f')} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--saturated-tasks", type=int, default=20_000,
                        help="tasks of the saturated scenario (sleep_1ms_limit4)")
    parser.add_argument("--tree", action="append", default=[],
                        help="NAME=PATH: also run the no-limit scenario on that checkout")
    parser.add_argument("--limits-on", default="",
                        help="comma-separated tree names (with flow control) that also run "
                             "the limited scenarios")
    parser.add_argument("--only", help="comma-separated scenario keys")
    parser.add_argument("--json", type=Path, default=OUT / "limits.json")
    parser.add_argument("--produce", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.produce:
        produce(opts.produce, opts.tasks)
        return
    trees = {}
    for item in opts.tree:
        name, _, path = item.partition("=")
        if not (Path(path) / "django_bgtasks").is_dir():
            parser.error(f"--tree {item}: no django_bgtasks there")
        trees[name] = Path(path)
    chosen = scenarios(trees, set(filter(None, opts.limits_on.split(","))))
    if opts.only:
        keys = set(opts.only.split(","))
        chosen = [sc for sc in chosen if sc.key in keys]

    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    with bench_redis(tempfile.mkdtemp(prefix="bgtasks-limits-bench-")) as url:
        env = {**os.environ, "BENCH_REDIS_URL": url, "BGTASKS_REDIS_URL": url,
               "PYTHONUNBUFFERED": "1"}
        results: dict = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "options": {"tasks": opts.tasks, "reps": opts.reps,
                        "saturated_tasks": opts.saturated_tasks},
            "code": str(ROOT), "trees": {k: str(v) for k, v in trees.items()},
            "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                  capture_output=True, text=True).stdout.strip(),
            "scenarios": [{"key": sc.key, "what": sc.what} for sc in chosen], "samples": [],
        }
        bench = Bench(opts, url, env, trees)
        log(f"redis-server at {url}; {len(chosen)} scenarios x {opts.reps}, "
            f"{opts.tasks:,} tasks")
        for rep in range(1, opts.reps + 1):
            for sc in chosen:
                record(results["samples"], sc.key, rep, lambda sc=sc, rep=rep: bench.run(sc, rep))
        save(opts.json, results, table(results))


if __name__ == "__main__":
    main()
