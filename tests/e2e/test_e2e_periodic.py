"""End-to-end: a 1-second periodic entry fired by two worker hosts at once (no leader)
runs once per tick, with no gap; and the declaration's problems are system-check errors."""

from __future__ import annotations

import statistics
import time

from demo import recording
from django_bgtasks.broker import get_broker
from django_bgtasks.checks import check_periodic
from django_bgtasks.periodic import entries
from helpers import counts, wait_until

PERIODIC_ENV = {"BGTASKS_TEST_PERIODIC": "1"}
RUN_FOR = 6.0


def test_two_hosts_fire_a_one_second_entry_once_per_tick(start_worker, redis_server):
    r = redis_server.client()
    hosts = [start_worker("--processes", "1", "--threads", "2", env=PERIODIC_ENV)
             for _ in range(2)]
    wait_until(lambda: any("periodic every-second: started" in h.log_text() for h in hosts),
               timeout=15, message="the entry started (on one host)")
    time.sleep(RUN_FOR)
    for host in hosts:
        host.stop(timeout=15)
    # A tick fired just before the stop may still be pending: a host that fires nothing
    # (--no-cron) runs what is left.
    drainer = start_worker("--processes", "1", "--threads", "2", "--no-cron", env=PERIODIC_ENV)
    wait_until(lambda: counts()["pending"] == 0 and counts()["active"] == 0, timeout=10,
               message="the last ticks' tasks ran")
    drainer.stop(timeout=15)
    assert "periodic every-second" not in drainer.log_text()

    history = list(reversed(get_broker().periodic_history("default", "every-second")))
    fired = [h for h in history if h["outcome"] == "fired"]
    ticks = [h["tick"] for h in fired]
    assert len(ticks) >= RUN_FOR - 2, history
    assert ticks == sorted(set(ticks)), "a tick fired twice"
    assert all(b - a == 1000 for a, b in zip(ticks, ticks[1:], strict=False)), "a gap"
    assert [h["outcome"] for h in history].count("started") == 1
    # every fired task ran exactly once (the task's own ledger)
    assert len(recording.times(r)) == len(ticks)
    lateness = sorted(h["at"] - h["tick"] for h in fired)
    assert lateness[-1] < 250, lateness
    both = sum("periodic every-second: enqueued" in host.log_text() for host in hosts)
    assert both >= 1
    print(f"\n{len(ticks)} ticks, one run each, fired by {both} host(s); lateness of the "
          f"enqueue after the tick: median {statistics.median(lateness):.0f} ms, "
          f"max {lateness[-1]} ms")


def test_bad_entries_are_system_check_errors(settings):
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": [
        {"name": "bad-spec", "task": "demo.tasks.record", "cron": "61 * * * *"},
        {"name": "bad-tz", "task": "demo.tasks.record", "cron": "0 3 * * *", "tz": "Mars/X"},
        {"name": "unknown-task", "task": "demo.tasks.nope", "every": 60},
        {"name": "not-json", "task": "demo.tasks.record", "every": 60, "args": [object()]},
        {"name": "ok", "task": "demo.tasks.record", "every": 60, "args": ["x"]},
        {"name": "ok", "task": "demo.tasks.record", "every": 30},
    ]}
    found, problems = entries()
    assert [e.name for e in found] == ["ok"]
    messages = "\n".join(p.msg for p in check_periodic())
    assert {p.id for p in check_periodic()} == {"bgtasks.E013"}
    for expected in ("'bad-spec'", "Mars/X", "demo.tasks.nope", "'not-json'",
                     "'ok' is declared twice"):
        assert expected in messages, messages


def test_the_decorator_declares_an_entry_and_keeps_an_enqueueable_task(monkeypatch, raw):
    from datetime import timedelta

    from django_bgtasks.periodic import declared as periodic

    monkeypatch.setattr(periodic, "_declared", {})
    monkeypatch.setattr(periodic, "_problems", [])

    @periodic.periodic_task(every=timedelta(minutes=5), name="report", args=[1],
                            catch_up="all", overlap="skip", max_retries=0)
    def nightly_report(n: int) -> int:
        return n

    @periodic.periodic_task(cron="not a spec")
    def broken() -> None:
        pass

    [entry], problems = periodic.entries()
    assert (entry.name, entry.args, entry.catch_up, entry.overlap) == ("report", [1], "all",
                                                                       "skip")
    assert entry.schedule.describe() == "every 5 minutes"
    assert nightly_report.max_retries == 0
    assert nightly_report.enqueue(2).state == "pending"  # still an ordinary task
    assert len(problems) == 1 and "broken" in problems[0] and "not a spec" in problems[0]
