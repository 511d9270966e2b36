"""Soak of periodic tasks (issue 7): one tick a second, exactly once, while things break?

Three `manage.py runbackground` hosts fire the 1-second entry "soak" (testproject's
BGTASKS_TEST_PERIODIC=soak: demo.tasks.record_tick, catch_up "all") with no leader; one
host's wall clock runs 3 s ahead and one 3 s behind (tests/support/clock_skew.c, LD_PRELOAD).
The queue's redis-server runs with appendonly yes, appendfsync always. Once each, at
seeded random moments (never in the first or last 10 s, apart from each other):
  pause      SIGSTOP a host's process group for 5 s, then SIGCONT
  host_kill  SIGKILL a host's process group, start it again ~2 s later
  redis      SIGKILL redis-server, start it again on the same AOF
Then the hosts get SIGTERM and a `--no-cron` host runs whatever they left.

The verdict comes from the task's own ledger (a second Redis, never touched):
  - every second from the first run's tick to the last has a run (a gap: exit 1);
  - no tick was fired twice: one task id per tick, no (id, attempt) run twice, no id
    enqueued twice in the hosts' logs or the entry's history (a duplicate fire: exit 1);
    a task id run again under a later attempt (at-least-once delivery) is a
    re-execution, counted apart: it must follow a fault that hit its first run (one
    with no fault in play: exit 1);
  - lateness (ledger Redis time at the run's start - the tick) p99 < 100 ms; --short
    judges it on the ticks away from the faults (not from 1 s before one to 6 s after it
    ended), since one or two fault-hit ticks are a 60 s run's p99; both are reported;
  - every tick a host logged as enqueued ran; the skewed hosts' own log timestamps show
    their clocks 3 s off.

    python bench/cron_soak.py                 # 10 minutes
    python bench/cron_soak.py --short         # 60 s (tests/e2e/test_cron_soak.py)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from chaos import Host, Redis, clock, log

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHIM_SOURCE = ROOT / "tests" / "support" / "clock_skew.c"
ENTRY = "soak"
SKEWS = {"skew+3": 3, "skew-3": -3, "noskew": 0}
FAULTS = ("pause", "host_kill", "redis")
DURATION = {"pause": 5.0, "host_kill": 2.5, "redis": 1.5}  # at most, from start to end
EDGE_S = 10.0  # no fault in the first or last 10 s
QUIET_BEFORE_S, QUIET_AFTER_S = 1.0, 6.0
LATE_MS = 100.0
# A run's outcome reaches Redis after the run ends, in the worker's next exchange: up to
# about 1 s later (the fetcher's idle wait). A fault that hits a host within this much
# after a run started can make that run's task id run again once its lease expires.
ACK_SLACK_S = 2.0
BUSY = ("pending", "active", "scheduled", "retry")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ \[pid \d+\] [\w.]+: (.*)$")
TICK_ID = re.compile(rf"cron:{ENTRY}:(\d+)")
SUCCEEDED = re.compile(rf"record_tick\[(cron:{ENTRY}:\d+)\] succeeded .*\(attempt (\d+)\)")


@dataclass(frozen=True)
class Fault:
    kind: str
    host: str  # "redis" for the redis restart
    start: float  # time.time() (the bench's clock is not skewed)
    end: float  # SIGCONT sent, host or redis-server started again


def plan_faults(seconds: float, hosts: list[str], rng: random.Random
                ) -> list[tuple[float, str, str]]:
    """(offset from the run's start, kind, target): each kind once, in its own slot of
    the run (so they do not overlap), away from its first and last 10 s."""
    kinds = list(FAULTS)
    rng.shuffle(kinds)
    paused, killed = rng.sample(hosts, 2)
    slot = (seconds - 2 * EDGE_S) / len(kinds)
    plan = []
    for i, kind in enumerate(kinds):
        room = max(0.0, slot - DURATION[kind] - QUIET_AFTER_S)  # quiet ticks between faults
        target = {"pause": paused, "host_kill": killed, "redis": "redis"}[kind]
        plan.append((EDGE_S + i * slot + rng.uniform(0, room), kind, target))
    return plan


def inject(kind: str, target: str, hosts: dict[str, Host], redis: Redis,
           rng: random.Random) -> Fault:
    """Do one fault now; returns once it is over (the target resumed or restarted)."""
    start = time.time()
    if kind == "pause":
        group = hosts[target].process.pid  # start_new_session: the group's id
        os.killpg(group, signal.SIGSTOP)
        try:
            time.sleep(DURATION["pause"])
        finally:
            os.killpg(group, signal.SIGCONT)
    elif kind == "host_kill":
        hosts[target].kill_group()
        time.sleep(rng.uniform(1.5, DURATION["host_kill"]))
        hosts[target].start()
    else:
        redis.kill()
        time.sleep(rng.uniform(0.5, DURATION["redis"]))
        redis.start()
    fault = Fault(kind, target, start, time.time())
    log(f"fault: {kind} {target} for {fault.end - start:.1f}s")
    return fault


def build_shim(workdir: Path) -> Path:
    """tests/support/clock_skew.c built into workdir (as tests/e2e/test_e2e_clock_skew.py builds it)."""
    library = workdir / "clock_skew.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
                   check=True)
    return library


# --- reading the hosts' logs -----------------------------------------------------------


@dataclass(frozen=True)
class Line:
    at: float  # the host's own clock (skewed on the skewed hosts)
    text: str  # the message, after the logger's name


def read_log(path: Path) -> list[Line]:
    """A host's log lines that carry a timestamp (tracebacks are skipped)."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        match = STAMP.match(raw)
        if match:
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            lines.append(Line(at, match[2]))
    return lines


def host_facts(lines: list[Line], started: float) -> dict:
    """What a host's log says: ticks it enqueued, runs it completed, and its clock offset
    (its timestamps against the ticks named on the same lines: Redis time, the real one)."""
    enqueued = [int(tick) for line in lines if f"periodic {ENTRY}: enqueued" in line.text
                for tick in TICK_ID.findall(line.text)]
    offsets = [line.at - int(tick) / 1000 for line in lines
               if f"periodic {ENTRY}: enqueued" in line.text or "succeeded" in line.text
               for tick in TICK_ID.findall(line.text)[-1:]]
    return {
        "enqueued": enqueued,
        "succeeded": [(m[1], int(m[2])) for line in lines if (m := SUCCEEDED.search(line.text))],
        "clock_offset_s": round(statistics.median(offsets), 2) if offsets else None,
        # as tests/e2e/test_e2e_clock_skew.py does: its first line against when it was started
        "first_line_offset_s": round(lines[0].at - started, 2) if lines else None,
        "started_lines": sum(f"periodic {ENTRY}: started" in line.text for line in lines),
        "lease_lost": sum("lease lost" in line.text for line in lines),
        "recovered": sum(line.text.startswith("recovered ") for line in lines),
    }


# --- verdict ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def stats(values: list[float]) -> dict:
    """n, p50, p95, p99 and max of lateness values (ms)."""
    return {"n": len(values), **{f"p{p}": _ms(percentile(values, p)) for p in (50, 95, 99)},
            "max": _ms(max(values, default=None))}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def fault_before(faults: list[Fault], at: float) -> str:
    """The latest fault begun by `at` (seconds), as 'kind target +Ns'."""
    begun = [f for f in faults if f.start <= at]
    if not begun:
        return "no fault before it"
    fault = max(begun, key=lambda f: f.start)
    return f"{fault.kind} {fault.host} +{at - fault.start:.1f}s"


def judge(runs: list[dict], history: list[dict], facts: dict[str, dict],
          ran_by: dict[tuple[str, int], str], faults: list[Fault], stop_at: float) -> dict:
    """The verdict's figures, from the ledger's runs, the entry's history and the logs."""
    by_tick: dict[int, list[dict]] = defaultdict(list)
    for run in runs:
        by_tick[run["tick"]].append(run)
    ticks = sorted(by_tick)
    expected = range(ticks[0], ticks[-1] + 1, 1000) if ticks else range(0)
    gaps = [t for t in expected if t not in by_tick]

    duplicate_fires = []
    for tick, tick_runs in by_tick.items():
        ids = {r["id"] for r in tick_runs}
        if ids != {f"cron:{ENTRY}:{tick}"}:
            duplicate_fires.append(f"tick {tick}: task ids {sorted(ids)}")
        for (task_id, attempt), n in Counter((r["id"], r["attempt"]) for r in tick_runs).items():
            if n > 1:
                duplicate_fires.append(f"{task_id} attempt {attempt} ran {n} times")
    enqueued = Counter(t for f in facts.values() for t in f["enqueued"])
    duplicate_fires += [f"tick {t} enqueued {n} times (logs)" for t, n in enqueued.items()
                        if n > 1]
    fired = Counter(h["tick"] for h in history if h.get("outcome") == "fired")
    duplicate_fires += [f"tick {t} fired {n} times (history)" for t, n in fired.items() if n > 1]
    lost = sorted((set(enqueued) | set(fired)) - set(by_tick))

    reexecutions = []
    for tick_runs in by_tick.values():
        ordered = sorted(tick_runs, key=lambda r: r["t"])
        for i, later in enumerate(ordered):
            earlier = [r for r in ordered[:i] if r["id"] == later["id"]]
            if not earlier or any(r["attempt"] == later["attempt"] for r in earlier):
                continue  # a first run, or a duplicate fire (above)
            # A fault explains it if it hit while an earlier run's outcome was in flight.
            hit = [f for f in faults if any(
                f.start - ACK_SLACK_S <= r["t"] / 1000 <= f.end + 1 for r in earlier)]
            reexecutions.append({
                "id": later["id"],
                "runs": [f"attempt {r['attempt']} at {clock(r['t'] / 1000)} by "
                         f"{ran_by.get((r['id'], r['attempt']), 'no success logged')}"
                         for r in ordered],
                "explained_by": [f"{f.kind} {f.host} at {clock(f.start)}" for f in hit]})

    quiet = [t for t in ticks if not any(f.start - QUIET_BEFORE_S <= t / 1000
                                         <= f.end + QUIET_AFTER_S for f in faults)]
    # Ticks due once the hosts were asked to stop wait for the drainer: not the product's.
    judged = [t for t in ticks if t / 1000 < stop_at]
    late = {t: min(r["t"] for r in by_tick[t]) - t for t in judged}
    outliers = [{"tick": clock(t / 1000), "late_ms": round(late[t]),
                 "after": fault_before(faults, t / 1000 + late[t] / 1000)}
                for t in judged if late[t] > LATE_MS]
    return {
        "ticks_expected": len(expected), "ticks_run": len(by_tick), "runs": len(runs),
        "gaps": gaps, "duplicate_fires": duplicate_fires, "lost": lost,
        "reexecutions": reexecutions,
        "unexplained_reexecutions": sum(not r["explained_by"] for r in reexecutions),
        "ticks_after_stop": len(ticks) - len(judged),
        "lateness_ms": stats(list(late.values())),
        "lateness_quiet_ms": stats([late[t] for t in quiet if t in late]),
        "outliers": outliers,
        "history_outcomes": dict(Counter(h.get("outcome") for h in history)),
    }


# --- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the run")
    parser.add_argument("--short", action="store_true", help="60 s (the test suite's)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lease", type=float, default=3.0, help="BGTASKS LEASE_SECONDS")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON report (default bench/out/cron_soak[-short].json)")
    args = parser.parse_args(argv)
    if args.short:
        args.seconds = 60.0
    if args.seconds < 60:
        parser.error("--seconds: at least 60 (three faults, each in its own slot)")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if args.out is None:
        args.out = HERE / "out" / f"cron_soak{'-short' if args.short else ''}.json"
    return args


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def all_running(hosts: dict[str, Host]) -> bool:
    """True; a host that exited (a broken tree, a bad setting) ends the run at once."""
    for host in hosts.values():
        if not host.is_running():
            tail = host.log_path.read_text(errors="replace").splitlines()[-5:]
            raise SystemExit(f"{host.name} exited early:\n" + "\n".join(tail))
    return True


def stop(hosts: list[Host], timeout: float = 20.0) -> None:
    """SIGTERM, once (a second one means "exit at once"): a graceful drain; SIGKILL the
    group of a host that does not exit in time."""
    for host in hosts:
        if host.is_running():
            host.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for host in hosts:
        try:
            host.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{host.name} did not exit {timeout:g}s after SIGTERM; killing it")
        host.kill_group()


def busy_count() -> int | None:
    from django_bgtasks.broker import get_broker
    from django_bgtasks.exceptions import BgTasksError

    try:
        counts = get_broker().counts("default")
    except BgTasksError:
        return None
    return sum(counts[state] for state in BUSY)


@dataclass
class Observed:
    """What a run leaves for the verdict."""

    runs: list[dict]  # the ledger's
    history: list[dict]  # the entry's, in Redis (the last 100 outcomes)
    faults: list[Fault]
    logs: dict[str, Path]  # per host, then "drainer"
    started_at: dict[str, float]
    stop_at: float  # when the hosts were asked to stop


def soak(args: argparse.Namespace, workdir: Path, rng: random.Random) -> Observed:
    """Start Redis, the ledger and three hosts; inject the faults; stop; drain."""
    shim = build_shim(workdir)
    queue_redis = Redis(workdir / "queue-redis", durable=True)
    ledger_redis = Redis(workdir / "ledger-redis", durable=False)
    queue_redis.start()
    ledger_redis.start()
    settings_env = {"BGTASKS_REDIS_URL": queue_redis.url,
                    "BGTASKS_TEST_LEDGER_URL": ledger_redis.url,
                    "BGTASKS_LEASE_SECONDS": str(args.lease), "BGTASKS_TEST_PERIODIC": ENTRY,
                    "BGTASKS_DEMO_DB": str(workdir / "demo.sqlite3")}
    env = {**os.environ, **settings_env, "PYTHONUNBUFFERED": "1"}
    os.environ.update(settings_env)
    sys.path.insert(0, str(ROOT / "testproject"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django
    import redis as redis_py

    django.setup()
    from demo import recording
    from django_bgtasks.broker import get_broker

    hosts = {name: Host(name, args, env if not skew else
                        {**env, "LD_PRELOAD": str(shim), "BGTASKS_CLOCK_SKEW": str(skew)},
                        workdir)
             for name, skew in SKEWS.items()}
    drainer = Host("drainer", args, env, workdir)
    drainer.argv.append("--no-cron")
    plan = plan_faults(args.seconds, list(hosts), rng)
    ledger = redis_py.Redis.from_url(ledger_redis.url)
    log(f"seed {args.seed}; {args.seconds:g}s; hosts {SKEWS} x {args.processes} process x "
        f"{args.threads} threads; lease {args.lease:g}s; logs in {workdir}")
    log("faults planned: " + ", ".join(f"{kind} {target} at +{at:.1f}s"
                                       for at, kind, target in plan))
    faults: list[Fault] = []
    started_at: dict[str, float] = {}
    try:
        for name, host in hosts.items():
            started_at[name] = time.time()
            host.start()
        wait_for(lambda: all_running(hosts) and recording.ticks(ledger, ENTRY), 60,
                 "the first tick's run")
        t0 = time.time()
        log("first tick ran; the run starts")
        for at, kind, target in plan:
            time.sleep(max(0.0, t0 + at - time.time()))
            faults.append(inject(kind, target, hosts, queue_redis, rng))
        time.sleep(max(0.0, t0 + args.seconds - time.time()))
        stop_at = time.time()
        log("stopping the hosts (SIGTERM); a --no-cron host runs what they left")
        stop(list(hosts.values()))
        drainer.start()
        wait_for(lambda: busy_count() == 0, args.lease + 30, "the queue to drain")
        stop([drainer])
        return Observed(recording.ticks(ledger, ENTRY),
                        get_broker().periodic_history("default", ENTRY), faults,
                        {h.name: h.log_path for h in [*hosts.values(), drainer]},
                        started_at, stop_at)
    finally:
        for host in [*hosts.values(), drainer]:
            if host.process is not None:
                try:  # a host paused when something failed
                    os.killpg(host.process.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                host.kill_group()
        queue_redis.kill()
        ledger_redis.kill()


def build_report(args: argparse.Namespace, seen: Observed, workdir: Path) -> dict:
    """The figures and the verdict (report["problems"] empty: PASS)."""
    lines = {name: read_log(path) for name, path in seen.logs.items()}
    facts = {name: host_facts(lines[name], seen.started_at[name]) for name in SKEWS}
    ran_by = {key: name for name, f in facts.items() for key in f["succeeded"]}
    ran_by |= dict.fromkeys(host_facts(lines["drainer"], 0)["succeeded"], "drainer")
    verdict = judge(seen.runs, seen.history, facts, ran_by, seen.faults, seen.stop_at)
    clocks = {name: {"skew_s": SKEWS[name], "log_offset_s": f["clock_offset_s"],
                     "first_line_after_start_s": f["first_line_offset_s"]}
              for name, f in facts.items()}
    skew_shown = all(f["clock_offset_s"] is not None
                     and abs(f["clock_offset_s"] - SKEWS[name]) < 0.5
                     for name, f in facts.items())
    p99 = verdict["lateness_quiet_ms" if args.short else "lateness_ms"]["p99"]
    started = sum(f["started_lines"] for f in facts.values())
    drainer_fired = any(line.text.startswith("periodic ") for line in lines["drainer"])
    checks = [
        (verdict["gaps"], f"{len(verdict['gaps'])} gap(s)"),
        (verdict["duplicate_fires"], f"{len(verdict['duplicate_fires'])} duplicate fire(s)"),
        (verdict["lost"], f"{len(verdict['lost'])} fired tick(s) never ran"),
        (verdict["unexplained_reexecutions"],
         f"{verdict['unexplained_reexecutions']} re-execution(s) with no fault in play"),
        (p99 is None or p99 >= LATE_MS, f"p99 lateness {p99} ms, not under {LATE_MS:g}"),
        (not skew_shown, "the skewed clocks do not show in the hosts' logs"),
        (drainer_fired, "the --no-cron host fired"),
        (len(seen.faults) != len(FAULTS), "not every fault happened"),
        (started != 1, f"{started} 'started' lines, not 1 (the entry's state was lost?)"),
    ]
    problems = [message for failed, message in checks if failed]
    return {
        "seed": args.seed, "seconds": args.seconds, "short": args.short, "lease": args.lease,
        "faults": [asdict(f) | {"start": clock(f.start), "end": clock(f.end)}
                   for f in seen.faults],
        **verdict,
        "fired_by": {name: len(f["enqueued"]) for name, f in facts.items()},
        "hosts_that_fired": sum(bool(f["enqueued"]) for f in facts.values()),
        "started_lines": started,
        # log lines: "lease lost" (a paused host's), "recovered N task(s)" (by whom)
        "recovery_lines": {name: {"lease_lost": f["lease_lost"], "recovered": f["recovered"]}
                           for name, f in facts.items()},
        "clocks": clocks, "skew_shown": skew_shown, "drainer_fired": drainer_fired,
        "judged_p99_ms": p99, "workdir": str(workdir),
        "problems": problems, "verdict": "FAIL" if problems else "PASS",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bgtasks-cron-soak-"))
    seen = soak(args, workdir, random.Random(args.seed))
    report = build_report(args, seen, workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_summary(report)
    return 1 if report["problems"] else 0


def print_summary(report: dict) -> None:
    def row(label: str, s: dict) -> str:
        return (f"{label}: n {s['n']}, p50 {s['p50']} ms, p95 {s['p95']} ms, "
                f"p99 {s['p99']} ms, max {s['max']} ms")

    print(f"\nseed {report['seed']}, {report['seconds']:g} s, lease {report['lease']:g} s")
    for fault in report["faults"]:
        print(f"  fault {fault['kind']:<9} {fault['host']:<7} {fault['start']} - {fault['end']}")
    print(f"ticks: {report['ticks_expected']} expected, {report['ticks_run']} run "
          f"({report['runs']} runs); gaps {len(report['gaps'])}, duplicate fires "
          f"{len(report['duplicate_fires'])}, fired but never run {len(report['lost'])}")
    print(f"re-executions (same task id, later attempt): {len(report['reexecutions'])}, "
          f"unexplained {report['unexplained_reexecutions']}")
    for item in report["reexecutions"]:
        print(f"  {item['id']}: {'; '.join(item['runs'])} <- {item['explained_by']}")
    print(row("lateness, all ticks", report["lateness_ms"]))
    print(row("lateness, away from faults", report["lateness_quiet_ms"]))
    for item in report["outliers"]:
        print(f"  late: tick {item['tick']} {item['late_ms']} ms, after {item['after']}")
    print(f"fired by {report['hosts_that_fired']} hosts: {report['fired_by']}; 'started' "
          f"lines {report['started_lines']}; ticks left to the drainer "
          f"{report['ticks_after_stop']}")
    for name, c in report["clocks"].items():
        print(f"  clock {name}: skew {c['skew_s']:+d} s, log stamps - ticks "
              f"{c['log_offset_s']} s, first line {c['first_line_after_start_s']} s after start")
    print(f"recovery log lines: {report['recovery_lines']}")
    print(f"history outcomes (last 100): {report['history_outcomes']}")
    print(f"{report['verdict']}{': ' + '; '.join(report['problems']) if report['problems'] else ''}"
          f" (logs in {report['workdir']})")


if __name__ == "__main__":
    sys.exit(main())
