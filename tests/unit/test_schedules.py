"""Schedules: cron specs across DST changes, epoch-anchored intervals, and bad input.

Expected ticks in the DST tables are written as local times with their UTC offset; each
was reasoned from the 2025 transitions (checked against zoneinfo by
test_table_offsets_are_real), not copied from the code's output:

- America/New_York: 2025-03-09 02:00 EST -> 03:00 EDT (07:00 UTC);
  2025-11-02 02:00 EDT -> 01:00 EST (06:00 UTC).
- Australia/Lord_Howe (30-minute shift): 2025-04-06 02:00 +11:00 -> 01:30 +10:30
  (15:00 UTC on 04-05); 2025-10-05 02:00 +10:30 -> 02:30 +11:00 (15:30 UTC on 10-04).
- America/Santiago: 2025-04-06 00:00 -03 -> 2025-04-05 23:00 -04 (03:00 UTC), so the
  23:00 hour of 04-05 happens twice; 2025-09-07 00:00 -04 -> 01:00 -03 (04:00 UTC), so
  that day has no midnight.

Debian cron's rules: a fixed time skipped by the change runs right after it; a fixed time
repeated by it runs once (the first time); specs with a wildcard hour or minute follow
elapsed time.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from django_bgtasks.periodic.schedules import (
    CronSchedule,
    EverySchedule,
    default_tz_name,
    parse_schedule,
)

NY = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"
SANTIAGO = "America/Santiago"


def ms(iso: str) -> int:
    """Epoch milliseconds of an ISO time with an explicit offset."""
    dt = datetime.fromisoformat(iso)
    assert dt.utcoffset() is not None, iso
    return int(dt.timestamp() * 1000)


def local_day_bounds(tz: str, day: date) -> tuple[int, int]:
    """[start, end) of a local calendar day in epoch ms (a missing midnight: the change)."""
    zone = ZoneInfo(tz)
    # fold=0 maps a nonexistent 00:00 to the pre-change offset, i.e. the change instant.
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def ticks_on_local_day(tz: str, spec: str, day: str) -> list[int]:
    start, end = local_day_bounds(tz, date.fromisoformat(day))
    return parse_schedule(spec, tz=tz).ticks_between(start - 1, end - 1, limit=100)


# (tz, spec, local day, every tick that day as local time with offset)
DST_TABLE = [
    # New York, spring forward: 02:30 does not exist, runs once at 03:00 EDT.
    (NY, "30 2 * * *", "2025-03-09", ["2025-03-09T03:00-04:00"]),
    (NY, "0 2 * * *", "2025-03-09", ["2025-03-09T03:00-04:00"]),
    (NY, "30 2 * * *", "2025-03-08", ["2025-03-08T02:30-05:00"]),  # control: a plain day
    (NY, "30 2 * * *", "2025-03-10", ["2025-03-10T02:30-04:00"]),
    # New York, fall back: 01:30 happens twice (EDT, then EST), runs once, in EDT.
    (NY, "30 1 * * *", "2025-11-02", ["2025-11-02T01:30-04:00"]),
    (NY, "30 1 * * *", "2025-11-03", ["2025-11-03T01:30-05:00"]),
    (NY, "30 2 * * *", "2025-11-02", ["2025-11-02T02:30-05:00"]),
    # Lord Howe, forward 30 minutes at 02:00: 02:15 does not exist, runs at 02:30.
    (LORD_HOWE, "15 2 * * *", "2025-10-05", ["2025-10-05T02:30+11:00"]),
    (LORD_HOWE, "0 2 * * *", "2025-10-05", ["2025-10-05T02:30+11:00"]),
    (LORD_HOWE, "15 2 * * *", "2025-10-06", ["2025-10-06T02:15+11:00"]),
    # Lord Howe, back 30 minutes at 02:00: 01:30-02:00 happens twice, each runs once.
    (LORD_HOWE, "45 1 * * *", "2025-04-06", ["2025-04-06T01:45+11:00"]),
    (LORD_HOWE, "30 1 * * *", "2025-04-06", ["2025-04-06T01:30+11:00"]),
    (LORD_HOWE, "0 2 * * *", "2025-04-06", ["2025-04-06T02:00+10:30"]),
    (LORD_HOWE, "45 1 * * *", "2025-04-07", ["2025-04-07T01:45+10:30"]),
    # Santiago, no midnight on 2025-09-07: the 00:00 job runs at 01:00 -03.
    (SANTIAGO, "0 0 * * *", "2025-09-07", ["2025-09-07T01:00-03:00"]),
    (SANTIAGO, "0 0 * * *", "2025-09-06", ["2025-09-06T00:00-04:00"]),
    (SANTIAGO, "0 0 * * *", "2025-09-08", ["2025-09-08T00:00-03:00"]),
    # Santiago, back at 00:00 on 2025-04-06: 23:30 of 04-05 happens twice, runs once.
    (SANTIAGO, "30 23 * * *", "2025-04-05", ["2025-04-05T23:30-03:00"]),
    (SANTIAGO, "0 0 * * *", "2025-04-06", ["2025-04-06T00:00-04:00"]),
]


@pytest.mark.parametrize("tz,spec,day,expected", DST_TABLE)
def test_dst_table(tz, spec, day, expected):
    assert ticks_on_local_day(tz, spec, day) == [ms(t) for t in expected]


@pytest.mark.parametrize("tz,spec,day,expected", DST_TABLE)
def test_table_offsets_are_real(tz, spec, day, expected):
    # Guards the table itself: each expected local time exists, with that offset, in tz.
    for iso in expected:
        dt = datetime.fromisoformat(iso)
        assert dt.astimezone(ZoneInfo(tz)).isoformat(timespec="minutes") == iso


# (tz, local day, runs of "0 * * * *" that day, local times that must be among them)
HOURLY_TABLE = [
    (NY, "2025-03-09", 23, ["2025-03-09T01:00-05:00", "2025-03-09T03:00-04:00"]),
    (NY, "2025-11-02", 25, ["2025-11-02T01:00-04:00", "2025-11-02T01:00-05:00"]),
    (NY, "2025-11-03", 24, []),
    (SANTIAGO, "2025-09-07", 23, ["2025-09-07T01:00-03:00"]),
    (SANTIAGO, "2025-04-05", 25, ["2025-04-05T23:00-03:00", "2025-04-05T23:00-04:00"]),
]


@pytest.mark.parametrize("tz,day,count,included", HOURLY_TABLE)
def test_hourly_follows_elapsed_time(tz, day, count, included):
    ticks = ticks_on_local_day(tz, "0 * * * *", day)
    assert len(ticks) == count
    assert {ms(t) for t in included} <= set(ticks)
    assert all(b - a == 3_600_000 for a, b in zip(ticks, ticks[1:], strict=False))


@pytest.mark.parametrize("tz,spec,around", [
    (NY, "30 1 * * *", "2025-11-02T06:00+00:00"),
    (NY, "30 2 * * *", "2025-03-09T07:00+00:00"),
    (NY, "0 * * * *", "2025-11-02T06:00+00:00"),
    (LORD_HOWE, "45 1 * * *", "2025-04-05T15:00+00:00"),
    (LORD_HOWE, "15 2 * * *", "2025-10-04T15:30+00:00"),
    (SANTIAGO, "30 23 * * *", "2025-04-06T03:00+00:00"),
    (SANTIAGO, "0 0 * * *", "2025-09-07T04:00+00:00"),
    ("UTC", "*/7 * * * *", "2025-01-01T00:00+00:00"),
])
def test_next_and_previous_agree_across_changes(tz, spec, around):
    # cronsim iterates fixed-time specs on the naive local clock; from inside a repeated
    # hour its raw answers go wrong (a "next" before the start, a "previous" a day early).
    schedule = parse_schedule(spec, tz=tz)
    center = ms(around)
    for step in range(-26 * 12, 26 * 12):  # every 5 minutes, +-26 hours
        for now in (center + step * 300_000, center + step * 300_000 - 1):
            prev = schedule.previous_at_or_before(now)
            nxt = schedule.next_after(now)
            assert prev is not None and prev <= now < nxt
            assert schedule.next_after(prev) == nxt  # nothing between prev and nxt
            assert schedule.previous_at_or_before(nxt) == nxt


def test_cron_tick_exactly_at_now():
    schedule = parse_schedule("*/5 * * * *", tz="UTC")
    t = ms("2025-06-01T12:05+00:00")
    assert schedule.previous_at_or_before(t) == t
    assert schedule.previous_at_or_before(t - 1) == t - 300_000
    assert schedule.next_after(t) == t + 300_000
    assert schedule.next_after(t - 1) == t


def test_six_field_spec_has_seconds():
    schedule = parse_schedule("*/15 * * * * *", tz="UTC")
    t = ms("2025-06-01T12:00+00:00")
    assert schedule.ticks_between(t, t + 60_000, limit=10) == [
        t + 15_000, t + 30_000, t + 45_000, t + 60_000,
    ]
    assert schedule.previous_at_or_before(t + 14_999) == t


def test_six_field_fixed_time_in_utc_zone_is_allowed():
    schedule = parse_schedule("30 0 9 * * *", tz="Asia/Tokyo")  # Tokyo has no DST
    assert schedule.next_after(ms("2025-06-01T00:00+09:00")) == ms("2025-06-01T09:00:30+09:00")


def test_cron_ticks_between_limit_and_bounds():
    schedule = parse_schedule("0 * * * *", tz="UTC")
    start = ms("2025-06-01T00:00+00:00")
    # after is exclusive, until inclusive
    assert schedule.ticks_between(start, start + 3 * 3_600_000, limit=10) == [
        start + 3_600_000, start + 2 * 3_600_000, start + 3 * 3_600_000,
    ]
    assert len(schedule.ticks_between(start - 1, start + 10 * 3_600_000, limit=4)) == 4
    assert schedule.ticks_between(start, start + 3_599_999, limit=10) == []
    assert schedule.ticks_between(start, start + 10 * 3_600_000, limit=0) == []


def test_cron_spec_whitespace_is_normalised():
    schedule = parse_schedule("  */5   *  * * * ", tz="UTC")
    assert isinstance(schedule, CronSchedule)
    assert schedule.spec == "*/5 * * * *"
    assert schedule.tz == "UTC"


def test_default_tz_is_time_zone_setting(settings):
    settings.TIME_ZONE = "Europe/Paris"
    assert default_tz_name() == "Europe/Paris"
    assert parse_schedule("0 9 * * *").tz == "Europe/Paris"
    settings.TIME_ZONE = None
    assert parse_schedule("0 9 * * *").tz == "UTC"


# -- every= ---------------------------------------------------------------------------


def test_every_second_is_anchored_to_the_epoch():
    schedule = parse_schedule(every=timedelta(seconds=1))
    assert isinstance(schedule, EverySchedule)
    assert schedule.next_after(1_000) == 2_000  # strictly after
    assert schedule.next_after(1_001) == 2_000
    assert schedule.next_after(1_999) == 2_000
    assert schedule.previous_at_or_before(2_000) == 2_000  # inclusive
    assert schedule.previous_at_or_before(1_999) == 1_000


def test_every_minutes_is_anchored_to_the_epoch():
    schedule = parse_schedule(every=timedelta(minutes=5))
    now = ms("2025-06-01T12:03:20+00:00")
    assert schedule.next_after(now) == ms("2025-06-01T12:05+00:00")
    assert schedule.previous_at_or_before(now) == ms("2025-06-01T12:00+00:00")
    # 7 minutes do not divide an hour: ticks are multiples since 1970, not :00, :07...
    seven = parse_schedule(every=timedelta(minutes=7))
    assert seven.next_after(now) % 420_000 == 0


def test_every_ticks_between():
    schedule = parse_schedule(every=timedelta(seconds=10))
    assert schedule.ticks_between(10_000, 50_000, limit=10) == [20_000, 30_000, 40_000, 50_000]
    assert schedule.ticks_between(9_999, 50_000, limit=2) == [10_000, 20_000]
    assert schedule.ticks_between(10_000, 19_999, limit=10) == []


def test_every_milliseconds_are_kept():
    schedule = parse_schedule(every=timedelta(seconds=1.5))
    assert schedule.next_after(0) == 1_500
    assert schedule.next_after(1_500) == 3_000


# -- describe ---------------------------------------------------------------------------


@pytest.mark.parametrize("every,text", [
    (timedelta(seconds=1), "every second"),
    (timedelta(seconds=30), "every 30 seconds"),
    (timedelta(minutes=1), "every minute"),
    (timedelta(minutes=5), "every 5 minutes"),
    (timedelta(minutes=90), "every 1 hour 30 minutes"),
    (timedelta(hours=1), "every hour"),
    (timedelta(days=1), "every day"),
    (timedelta(days=2, seconds=1), "every 2 days 1 second"),
    (timedelta(seconds=1.5), "every 1 second 500 milliseconds"),
])
def test_every_describe(every, text):
    schedule = parse_schedule(every=every)
    assert schedule.describe() == text
    assert schedule.spec == text
    assert schedule.tz == "UTC"


@pytest.mark.parametrize("spec,text", [
    ("30 2 * * *", "At 02:30 every day"),
    ("*/5 * * * *", "Every fifth minute of every hour"),
    ("0 9 * * MON-FRI", "At 09:00 on Monday through Friday"),
])
def test_cron_describe(spec, text):
    assert parse_schedule(spec, tz="UTC").describe() == text


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,words", [
    ({"cron": "* * * *", "tz": "UTC"}, ["invalid cron spec", "'* * * *'", "number of fields"]),
    ({"cron": "61 * * * *", "tz": "UTC"}, ["invalid cron spec", "minute"]),
    ({"cron": "0 0 30 2 *", "tz": "UTC"}, ["invalid cron spec", "day-of-month"]),
    ({"cron": "hello", "tz": "UTC"}, ["invalid cron spec", "'hello'"]),
    ({"cron": 5, "tz": "UTC"}, ["cron= must be a string"]),
    ({"cron": "* * * * *", "tz": "Mars/Olympus"}, ["unknown time zone", "'Mars/Olympus'"]),
    ({"cron": "* * * * *", "tz": "America"}, ["unknown time zone", "'America'"]),
    ({"cron": "* * * * *", "tz": ""}, ["unknown time zone"]),
    ({}, ["exactly one of cron= and every="]),
    ({"cron": "* * * * *", "every": timedelta(minutes=1)}, ["exactly one of cron= and every="]),
    ({"every": timedelta(0)}, ["at least 1 second"]),
    ({"every": timedelta(seconds=-5)}, ["at least 1 second"]),
    ({"every": timedelta(milliseconds=999)}, ["at least 1 second"]),
    ({"every": timedelta(microseconds=1_000_500)}, ["whole number of milliseconds"]),
    ({"every": 60}, ["must be a datetime.timedelta"]),
    ({"every": timedelta(days=1), "tz": "Europe/Paris"}, ["tz= applies only to cron="]),
    ({"cron": "0 30 2 * * *", "tz": NY}, ["seconds field", "America/New_York", "DST"]),
])
def test_errors_name_the_problem(kwargs, words):
    with pytest.raises(ValueError) as excinfo:
        parse_schedule(**kwargs)
    for word in words:
        assert word in str(excinfo.value)
