"""What the admin and the CLI show of periodic entries (next runs, last run, health,
history) and their two actions (switch, run now); and what a periodic task learns of its
own run through current_task()."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from django_bgtasks import current_task
from django_bgtasks.context import running
from django_bgtasks.message import TaskMessage
from django_bgtasks.periodic import entries
from django_bgtasks.periodic.status import OVERDUE_AFTER_MS, PeriodicEntries
from django_bgtasks.worker.periodic import PeriodicScheduler
from helpers import counts

SECOND = 1000


@pytest.fixture
def declared(settings):
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": [
        {"name": "minutely", "task": "demo.tasks.record_tick", "every": 60,
         "args": ["minutely"]},
        {"name": "nightly", "task": "demo.tasks.record_tick", "cron": "30 2 * * *",
         "tz": "America/New_York", "args": ["nightly"]},
    ]}
    return PeriodicEntries()


def scheduler_pass(broker) -> None:
    """One pass of a host's scheduler over the declared entries."""
    PeriodicScheduler(broker, entries()[0]).tick()


def redis_now(raw) -> int:
    seconds, micros = raw.time()
    return seconds * 1000 + micros // 1000


def test_a_new_entry_shows_its_next_three_runs_and_no_last_run(declared, raw):
    status = {s.name: s for s in declared.statuses()}
    nightly = status["nightly"]
    assert nightly.health == "new" and nightly.enabled and nightly.last_run is None
    local = [t.astimezone(ZoneInfo(nightly.entry.schedule.tz)) for t in nightly.next_runs]
    assert len(local) == 3
    assert all((t.hour, t.minute) in ((2, 30), (3, 0)) for t in local), local
    assert local == sorted(local) and len({t.date() for t in local}) == 3
    now = datetime.fromtimestamp(redis_now(raw) / 1000, tz=UTC)
    assert all(t > now for t in nightly.next_runs)
    minutely = status["minutely"].next_runs
    gaps = [(b - a).total_seconds() for a, b in zip(minutely, minutely[1:], strict=False)]
    assert gaps == [60, 60]


def test_an_entry_whose_tick_did_not_fire_is_overdue(declared, broker, raw):
    scheduler_pass(broker)
    assert {s.name: s.health for s in declared.statuses()} == {"minutely": "ok",
                                                               "nightly": "ok"}
    # As if every scheduler had been down for 3 minutes: the mark lags behind.
    state = broker.periodic_states("default")["minutely"]
    raw.hset("bgtasks:{default}:cron", "minutely",
             f'{{"last":{state["last"] - 180 * SECOND},"spec":"{state["spec"]}",'
             f'"enabled":true,"task":""}}')
    status = declared.status("minutely")
    assert status.health == "overdue"
    assert status.overdue_tick.timestamp() * 1000 <= redis_now(raw) - OVERDUE_AFTER_MS
    # A disabled entry is not overdue: it is meant not to fire.
    declared.set_enabled("minutely", False)
    assert declared.status("minutely").health == "ok"


def test_run_now_enqueues_one_task_with_the_entrys_arguments(declared, broker, raw):
    scheduler_pass(broker)
    task_id, status = declared.run_now("minutely", request_id="form-1")
    assert (task_id, status) == ("cron:minutely:now:form-1", "ok")
    assert counts()["pending"] == 1
    # The same form posted again finds its task instead of adding one.
    assert declared.run_now("minutely", request_id="form-1")[1] == "exists"
    assert counts()["pending"] == 1
    msg = TaskMessage.decode(raw.hget("bgtasks:{default}:msg", task_id))
    assert (msg.name, msg.args, msg.periodic) == ("demo.tasks.record_tick", ["minutely"],
                                                  "minutely")
    status = declared.status("minutely")
    assert status.history[0].outcome == "run now" and status.history[0].task_id == task_id
    assert status.last_run.item.task_id == task_id and status.last_run.outcome == "pending"
    # The run becomes the entry's latest task: overlap="skip" would wait for it.
    assert broker.periodic_states("default")["minutely"]["task"] == task_id


def test_switching_off_and_on_is_noted_and_reported_once(declared, broker):
    scheduler_pass(broker)
    assert declared.set_enabled("nightly", False) is True
    assert declared.set_enabled("nightly", False) is False
    assert declared.status("nightly").enabled is False
    assert declared.set_enabled("nightly", True) is True
    outcomes = [h.outcome for h in declared.status("nightly").history]
    assert outcomes[:3] == ["enabled", "disabled", "started"]


def test_unknown_entry_names_the_known_ones(declared):
    with pytest.raises(LookupError, match="minutely, nightly"):
        declared.run_now("nope")


def test_current_task_tells_a_periodic_run_its_tick():
    assert current_task() is None
    msg = TaskMessage(id="cron:job:1700000000000", name="t", queue="default", args=[],
                      kwargs={}, priority=0, max_retries=0, timeout=5, result_ttl=None,
                      unique_key=None, enqueued_at=1700000000.4, run_after=1700000000.0,
                      periodic="job")
    decoded = TaskMessage.decode(msg.encode())
    with running(decoded, 2, "w1") as run:
        assert current_task() is run
        assert (run.periodic_entry, run.attempt) == ("job", 2)
        assert run.scheduled_for == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert current_task() is None
    # An ordinary message has no periodic field at all (messages do not grow).
    plain = TaskMessage(**{**msg.__dict__, "periodic": None})
    assert '"periodic"' not in plain.encode()
    with running(plain, 1, "w1") as run:
        assert run.scheduled_for is None and run.periodic_entry is None


def test_switching_an_entry_no_scheduler_has_seen(declared, broker):
    assert declared.set_enabled("nightly", True) is False  # it is on already
    assert declared.status("nightly").health == "new"
    assert declared.set_enabled("nightly", False) is True
    status = declared.status("nightly")
    assert (status.health, status.enabled) == ("new", False)
    assert declared.set_enabled("nightly", True) is True
    scheduler_pass(broker)
    status = declared.status("nightly")
    assert (status.health, status.enabled) == ("ok", True)
    assert status.history[0].outcome == "started"


def test_a_run_now_task_can_be_looked_up_on_a_fresh_redis(declared, raw):
    from django_bgtasks import get_task_info

    task_id, _ = declared.run_now("minutely")
    assert get_task_info(task_id).state == "pending"
