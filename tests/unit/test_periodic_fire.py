"""cron_fire.lua / cron_enable.lua through the broker: each due tick of a periodic entry
is enqueued exactly once, whichever host offers it, however late, repeated or out of
order; new, changed and re-enabled entries never fire a backlog."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_bgtasks.broker.types import PeriodicTick

Q = "default"
SECOND = 1000


def redis_now(raw) -> int:
    seconds, micros = raw.time()
    return seconds * 1000 + micros // 1000


def ticks(*times: int, name: str = "job") -> list[PeriodicTick]:
    return [PeriodicTick(t, f"cron:{name}:{t}", f'{{"tick":{t}}}') for t in times]


def fire(broker, offered, *, name="job", spec="s1", mark=0, policy="all", late=None,
         overlap="allow", omitted="0"):
    return broker.fire_periodic(Q, name, spec, mark, policy, late, overlap, 0, 3,
                                sorted(offered, key=lambda t: t.tick_ms), omitted)


def pending(raw) -> list[str]:
    return [m.decode() for m in raw.zrange(f"bgtasks:{{{Q}}}:pending", 0, -1)]


@pytest.fixture
def started(broker, raw):
    """An entry whose mark stands 10 s before now; returns that mark."""
    mark = redis_now(raw) - 10 * SECOND
    assert fire(broker, [], mark=mark).outcome == "started"
    return mark


def test_a_new_entry_starts_counting_and_fires_nothing(broker, raw):
    now = redis_now(raw)
    result = fire(broker, ticks(now - 5 * SECOND, now - SECOND), mark=now - SECOND)
    assert (result.outcome, result.fired, result.last_ms) == ("started", [], now - SECOND)
    assert pending(raw) == []


def test_a_due_tick_fires_once_and_a_repeat_or_stale_one_never(broker, raw, started):
    tick = started + 5 * SECOND
    first = fire(broker, ticks(tick))
    assert (first.outcome, first.fired) == ("fired", [f"cron:job:{tick}"])
    assert fire(broker, ticks(tick)).outcome == "nothing due"
    assert fire(broker, ticks(started + SECOND)).outcome == "nothing due"  # behind the mark
    assert pending(raw) == [f"cron:job:{tick}"]


def test_a_tick_not_yet_due_on_redis_clock_is_refused(broker, raw, started):
    future = redis_now(raw) + 3 * SECOND  # a host whose clock runs 3 s fast
    assert fire(broker, ticks(future)).outcome == "nothing due"
    assert pending(raw) == []
    assert broker.periodic_states(Q)["job"]["last"] == started  # the mark did not move


@pytest.mark.parametrize("policy, expected", [
    ("all", [2, 4, 6]), ("latest", [6]), ("skip", []),
])
def test_catch_up_policies(broker, raw, started, policy, expected):
    missed = ticks(started + 2 * SECOND, started + 4 * SECOND, started + 6 * SECOND)
    result = fire(broker, missed, policy=policy)
    assert pending(raw) == [f"cron:job:{started + s * SECOND}" for s in expected]
    assert result.last_ms == started + 6 * SECOND  # the mark moves past all of them
    history = broker.periodic_history(Q, "job")
    assert [h["outcome"] for h in history][0] == ("fired" if policy == "all" else
                                                  "missed 2" if policy == "latest" else
                                                  "missed 3")


def test_skip_fires_a_tick_when_nothing_was_missed(broker, raw, started):
    assert fire(broker, ticks(started + SECOND), policy="skip").outcome == "fired"


def test_max_lateness_drops_ticks_found_too_late(broker, raw, started):
    result = fire(broker, ticks(started + SECOND, redis_now(raw) - 100), late=2 * SECOND)
    assert len(result.fired) == 1 and result.fired[0] != f"cron:job:{started + SECOND}"
    assert "too late" in [h["outcome"] for h in broker.periodic_history(Q, "job")]


def test_overlap_skip_waits_while_the_last_run_is_pending(broker, raw, started):
    assert fire(broker, ticks(started + SECOND), overlap="skip").outcome == "fired"
    result = fire(broker, ticks(started + 2 * SECOND), overlap="skip")
    assert result.outcome == "skipped" and len(pending(raw)) == 1
    raw.zrem(f"bgtasks:{{{Q}}}:pending", f"cron:job:{started + SECOND}")  # it ran
    assert fire(broker, ticks(started + 3 * SECOND), overlap="skip").outcome == "fired"


def test_a_changed_spec_starts_again_without_a_backlog(broker, raw, started):
    now = redis_now(raw)
    result = fire(broker, ticks(started + SECOND, now - SECOND), spec="s2", mark=now - SECOND)
    assert result.outcome == "started" and pending(raw) == []


def test_disabled_entries_fire_nothing_and_re_enabling_skips_the_gap(broker, raw, started):
    assert broker.enable_periodic(Q, "job", False, started) is True
    assert broker.enable_periodic(Q, "job", False, started) is False  # already off
    assert fire(broker, ticks(started + SECOND)).outcome == "disabled"
    now = redis_now(raw)
    assert broker.enable_periodic(Q, "job", True, now - SECOND) is True
    assert fire(broker, ticks(started + 2 * SECOND, now - 2 * SECOND)).outcome == "nothing due"
    assert fire(broker, ticks(now)).fired == [f"cron:job:{now}"]
    outcomes = [h["outcome"] for h in broker.periodic_history(Q, "job")]
    assert outcomes[:3] == ["fired", "enabled", "disabled"]


# Hosts offer ticks of a 1-second entry: subsets, repeated, stale, in any order of calls.
offers = st.lists(st.lists(st.integers(min_value=0, max_value=29), max_size=8),
                  min_size=1, max_size=25)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=offers)
def test_every_due_tick_offered_is_enqueued_exactly_once(broker, raw, calls):
    raw.flushdb()
    base = redis_now(raw) - 40 * SECOND
    assert fire(broker, [], mark=base).outcome == "started"
    fired: list[str] = []
    highest = base
    for offered in calls:
        result = fire(broker, ticks(*{base + (s + 1) * SECOND for s in offered}))
        fired += result.fired
        newer = [base + (s + 1) * SECOND for s in offered if base + (s + 1) * SECOND > highest]
        # policy 'all': exactly the offered ticks above the mark fire, in order
        assert result.fired == [f"cron:job:{t}" for t in sorted(set(newer))]
        highest = max([highest, *newer])
    assert len(fired) == len(set(fired))  # never twice
    assert sorted(pending(raw)) == sorted(fired)


@pytest.mark.parametrize(("policy", "omitted", "note"), [
    ("all", "50", "missed 50"), ("latest", "50", "missed 51"), ("skip", "50", "missed 52"),
    ("all", "10000+", "missed 10000+")])
def test_ticks_beyond_the_offered_ones_are_noted_as_missed(broker, raw, started, policy,
                                                           omitted, note):
    result = fire(broker, ticks(started + SECOND, started + 2 * SECOND), policy=policy,
                  omitted=omitted)
    history = broker.periodic_history(Q, "job")
    assert history[0]["outcome"] == note
    assert len(result.fired) == {"all": 2, "latest": 1, "skip": 0}[policy]


def test_a_count_of_omitted_ticks_from_a_host_behind_the_mark_is_ignored(broker, raw, started):
    fire(broker, ticks(started + 2 * SECOND))
    # This host read an older mark: its first offered tick is stale, so its count of even
    # older ticks is too.
    fire(broker, ticks(started + SECOND, started + 2 * SECOND, started + 3 * SECOND),
         omitted="40")
    assert [h["outcome"] for h in broker.periodic_history(Q, "job")][:2] == ["fired", "fired"]
