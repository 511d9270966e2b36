"""``manage.py bgtasks cron ...`` against the real Redis of conftest.py.

Entries are declared through settings; one scheduler pass (as a runbackground host makes
every second) stands for "a scheduler has seen them".
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_bgtasks.broker import get_broker
from django_bgtasks.info import TaskInfo
from django_bgtasks.management.commands.bgtasks import Command
from django_bgtasks.periodic import entries
from django_bgtasks.periodic.status import PeriodicEntries
from django_bgtasks.worker.periodic import PeriodicScheduler
from helpers import MANAGE_PY, REPO_ROOT, BgtasksCommand, counts, free_port, wait_until

MINUTELY = {"name": "minutely", "task": "demo.tasks.record_tick", "every": 60,
            "args": ["minutely"]}
NIGHTLY = {"name": "nightly", "task": "demo.tasks.record_tick", "cron": "30 2 * * *",
           "tz": "America/New_York", "args": ["nightly"]}


@pytest.fixture(autouse=True)
def declared(settings):
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": [MINUTELY, NIGHTLY]}


def declare(settings, *specs: dict) -> None:
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": list(specs)}


run = BgtasksCommand("cron")
run_json = run.json
fails = run.error  # the CommandError message of a command expected to fail


def scheduler_pass() -> None:
    """One pass of a host's scheduler over the declared entries."""
    PeriodicScheduler(get_broker(), entries()[0]).tick()


def row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.split()[:1] == [name])


def redis_now() -> datetime:
    return datetime.fromtimestamp(get_broker().server_time_ms() / 1000, tz=UTC)


# -- ls -----------------------------------------------------------------------------------


def test_ls_shows_every_entry_new_until_a_scheduler_sees_it():
    out = run("ls")
    assert out.splitlines()[0].split() == ["name", "state", "schedule", "tz", "next", "run",
                                           "last", "run", "health"]
    minutely, nightly = row(out, "minutely"), row(out, "nightly")
    assert "enabled" in minutely and "every minute" in minutely and " UTC " in minutely
    assert "At 02:30 every day (30 2 * * *)" in nightly and "America/New_York" in nightly
    assert "NEW: not yet seen by a scheduler" in minutely
    assert "2 periodic entries (2 new)." in out

    scheduler_pass()

    out = run("ls")
    assert row(out, "minutely").endswith("  ok") and row(out, "nightly").endswith("  ok")
    assert "Z (" in row(out, "minutely")  # the next run, and how far off it is
    assert out.rstrip().endswith("2 periodic entries.")


def test_ls_flags_an_overdue_entry_with_its_tick(raw):
    scheduler_pass()
    # As if every scheduler had been down for 3 minutes: the mark lags behind.
    key = get_broker().queue_keys("default").cron
    state = json.loads(raw.hget(key, "minutely"))
    raw.hset(key, "minutely", json.dumps({**state, "last": state["last"] - 180_000}))

    out = run("ls")

    overdue = PeriodicEntries().status("minutely").overdue_tick
    assert f"OVERDUE since {overdue.isoformat().replace('+00:00', 'Z')}" in row(out, "minutely")
    assert "(1 overdue)" in out
    assert run_json("ls")["entries"][0]["health"] == "overdue"


def test_ls_flags_an_entry_whose_schedule_changed(settings):
    scheduler_pass()
    declare(settings, {**MINUTELY, "every": 120}, NIGHTLY)
    out = run("ls")
    assert "CHANGED" in row(out, "minutely") and "every 2 minutes" in row(out, "minutely")
    assert row(out, "nightly").endswith("  ok")


def test_ls_shows_the_last_run_its_outcome_and_lateness(settings):
    declare(settings, {**MINUTELY, "every": 1}, NIGHTLY)
    scheduler_pass()
    assert run_json("ls")["entries"][0]["last_run"] is None

    def fired() -> bool:
        scheduler_pass()
        return counts()["pending"] > 0

    wait_until(fired, timeout=5, message="the every-second entry fired")

    last = row(run("ls"), "minutely")
    assert "Z pending, enqueued " in last and "s late" in last
    data = {e["name"]: e for e in run_json("ls")["entries"]}
    assert data["minutely"]["last_run"]["kind"] == "fired"
    assert data["minutely"]["last_run"]["outcome"] == "pending"
    assert data["nightly"]["last_run"] is None

    task_id = run("run", "nightly").split()[-1]
    assert "pending (run now)" in row(run("ls"), "nightly")
    assert {e["name"]: e for e in run_json("ls")["entries"]}["nightly"]["last_run"][
        "task_id"] == task_id


def test_ls_json_has_every_entry_and_the_problems(settings):
    declare(settings, MINUTELY, NIGHTLY, {"name": "broken", "task": "demo.tasks.record_tick",
                                          "cron": "61 * * * *"})
    data = run_json("ls")
    assert [e["name"] for e in data["entries"]] == ["minutely", "nightly"]
    nightly = data["entries"][1]
    assert (nightly["schedule"], nightly["tz"], nightly["args"]) == (
        "30 2 * * *", "America/New_York", ["nightly"])
    assert (nightly["enabled"], nightly["health"], nightly["queue"]) == (True, "new",
                                                                        "default")
    assert len(nightly["next_runs"]) == 3 and nightly["next_runs"][0].endswith("Z")
    [problem] = data["problems"]
    assert "'broken'" in problem


def test_ls_warns_about_declaration_problems_on_stderr(settings):
    declare(settings, MINUTELY, {"name": "broken", "task": "demo.tasks.record_tick",
                                 "cron": "30 2 * * *", "tz": "Mars/Olympus"})
    out, err = io.StringIO(), io.StringIO()
    call_command("bgtasks", "cron", "ls", stdout=out, stderr=err)
    assert "minutely" in out.getvalue() and "broken" not in out.getvalue()
    assert "warning: periodic entry 'broken': unknown time zone 'Mars/Olympus'" in \
        err.getvalue()


def test_ls_without_entries(settings):
    declare(settings)
    assert run("ls").startswith("No periodic entries are declared")
    assert run_json("ls") == {"entries": [], "problems": []}


# -- next ---------------------------------------------------------------------------------


def test_next_gives_n_increasing_runs_in_the_entrys_zone_and_utc():
    before = redis_now()
    [nightly] = run_json("next", "nightly", "-n", "10")["entries"]
    assert nightly["name"] == "nightly" and nightly["tz"] == "America/New_York"
    local = [datetime.fromisoformat(r["local"]) for r in nightly["runs"]]
    utc = [datetime.fromisoformat(r["utc"].replace("Z", "+00:00")) for r in nightly["runs"]]
    assert len(utc) == 10 and local == utc
    assert all(a < b for a, b in zip(utc, utc[1:], strict=False)) and utc[0] > before
    # 02:30 in New York is 06:30 UTC in summer, 07:30 in winter; on the spring-forward
    # day 02:30 does not exist and the run is at 03:00 EDT, 07:00 UTC.
    in_utc = {(-4, 2, 30): (6, 30), (-5, 2, 30): (7, 30), (-4, 3, 0): (7, 0)}
    for here, there in zip(local, utc, strict=True):
        offset = int(here.utcoffset().total_seconds() // 3600)
        assert in_utc[(offset, here.hour, here.minute)] == (there.hour, there.minute), here

    out = run("next", "nightly", "-n", "3")
    assert out.splitlines()[0] == "nightly: At 02:30 every day (30 2 * * *), America/New_York"
    lines = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(lines) == 3
    for line, when in zip(lines, utc, strict=False):
        assert when.strftime("%Y-%m-%dT%H:%M:%SZ") in line
        assert when.astimezone(local[0].tzinfo).strftime("%H:%M:%S") in line
        assert " EDT " in line or " EST " in line


def test_next_of_every_entry_defaults_to_five_runs_each():
    out = run("next")
    assert "minutely: every minute, UTC" in out and "nightly: At 02:30" in out
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) == 10

    data = run_json("next", "-n", "100")
    minutely = next(e for e in data["entries"] if e["name"] == "minutely")
    times = [datetime.fromisoformat(r["utc"].replace("Z", "+00:00")) for r in minutely["runs"]]
    assert len(times) == 100
    assert {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)} == {60}


def test_next_says_when_an_entry_is_disabled():
    run("disable", "nightly")
    out = run("next", "nightly", "-n", "1")
    assert "DISABLED" in out.splitlines()[0] and "bgtasks cron enable nightly" in out
    assert run_json("next", "nightly")["entries"][0]["enabled"] is False


def test_next_refuses_a_count_out_of_range():
    assert fails("next", "-n", "0") == "--count must be between 1 and 100"
    assert fails("next", "nightly", "-n", "101") == "--count must be between 1 and 100"


# -- run, enable, disable -----------------------------------------------------------------


def test_run_enqueues_one_task_with_the_entrys_arguments():
    out = run("run", "nightly")
    task_id = out.splitlines()[-1]
    assert "Enqueued periodic entry 'nightly' now (demo.tasks.record_tick" in out
    assert counts()["pending"] == 1
    # The queue named, since a task enqueued by a periodic entry does not register its
    # queue in the set of known queues (the workers serving it do).
    info = TaskInfo.from_record(get_broker().read_task(task_id, ["default"]))
    assert (info.name, info.args, info.state) == ("demo.tasks.record_tick", ["nightly"],
                                                  "pending")


def test_disable_then_enable_report_whether_anything_changed():
    out = run("disable", "minutely")
    assert out.startswith("Disabled periodic entry 'minutely': every host sees it at its "
                          "next tick")
    assert PeriodicEntries().status("minutely").enabled is False
    assert PeriodicEntries().status("nightly").enabled is True
    assert row(run("ls"), "minutely").split()[1:2] == ["DISABLED"]
    assert "(1 disabled" in run("ls")
    assert run("disable", "minutely").strip() == \
        "Periodic entry 'minutely' was already disabled; nothing changed."

    assert run("enable", "minutely").startswith("Enabled periodic entry 'minutely'")
    assert PeriodicEntries().status("minutely").enabled is True
    assert run("enable", "minutely").strip() == \
        "Periodic entry 'minutely' was already enabled; nothing changed."


# -- errors and the real command line ------------------------------------------------------


@pytest.mark.parametrize("args", [["run", "nope"], ["enable", "nope"], ["disable", "nope"],
                                  ["next", "nope"]])
def test_an_unknown_name_is_an_error_naming_the_known_entries(args):
    assert fails(*args) == "no periodic entry named 'nope' (known: minutely, nightly)"
    assert counts()["pending"] == 0


def test_an_unknown_name_also_shows_the_declaration_problems(settings):
    declare(settings, MINUTELY, {**NIGHTLY, "tz": "Mars/Olympus"})
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"\(known: minutely\)"):
        call_command("bgtasks", "cron", "run", "nightly", stdout=io.StringIO(), stderr=err)
    assert "periodic entry 'nightly': unknown time zone" in err.getvalue()


def test_redis_unreachable_is_a_command_error_naming_the_target(settings):
    port = free_port()
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    started = time.monotonic()
    for args in (["ls"], ["next"], ["next", "nightly"], ["run", "nightly"],
                 ["enable", "nightly"], ["disable", "nightly"]):
        message = fails(*args)
        assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in message, args
    assert time.monotonic() - started < 10


def test_every_cron_subcommand_has_help():
    parser = Command().create_parser("manage.py", "bgtasks")
    [sub] = [a for a in parser._actions if a.dest == "action"]
    [cron] = [a for a in sub.choices["cron"]._actions if a.dest == "cron_action"]
    assert set(cron.choices) == {"ls", "next", "run", "enable", "disable"}
    for name, subparser in cron.choices.items():
        assert len(subparser.description) > 20, name
        assert all(a.help for a in subparser._actions), name


def test_manage_py_cron(redis_server):
    env = {**os.environ, "BGTASKS_REDIS_URL": redis_server.url, "BGTASKS_DEMO_DB": os.devnull,
           "BGTASKS_TEST_PERIODIC": "latest-2s,skip-2s"}

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(MANAGE_PY), "bgtasks", "cron", *args],
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=60)

    proc = manage("ls")
    assert proc.returncode == 0, proc.stderr
    assert "latest-2s" in proc.stdout and "every 2 seconds" in proc.stdout

    proc = manage("run", "nope")
    assert proc.returncode == 1
    assert "no periodic entry named 'nope' (known: latest-2s, skip-2s)" in proc.stderr
    assert "Traceback" not in proc.stderr
