"""Retry policy: the default backoff curve and decide_failure."""

from __future__ import annotations

from datetime import timedelta

import pytest

from django_bgtasks import Retry, SkipRetry
from django_bgtasks.backoff import decide_failure, default_backoff


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_default_backoff_bounds(attempt):
    low = attempt**4 + 15
    high = low + 10 * (attempt + 1)
    delays = [default_backoff(attempt) for _ in range(300)]
    assert all(low <= d <= high for d in delays)
    # jittered, and spread over most of the range
    assert max(delays) - min(delays) > 0.5 * (high - low)


def test_default_backoff_grows():
    assert default_backoff(1) < default_backoff(3) < default_backoff(5) < default_backoff(10)


@pytest.mark.parametrize("attempt,max_retries,outcome", [
    (1, 3, "retry"), (3, 3, "retry"), (4, 3, "dead"), (10, 3, "dead"),
    (1, 0, "dead"), (1, 1, "retry"), (2, 1, "dead"),
])
def test_retry_while_attempts_are_left(attempt, max_retries, outcome):
    decision = decide_failure(ValueError("x"), attempt, max_retries, None)
    assert decision.outcome == outcome
    if outcome == "retry":
        low = attempt**4 + 15
        assert low <= decision.delay <= low + 10 * (attempt + 1)
    assert decision.reason


def test_skip_retry_goes_dead_with_retries_left():
    decision = decide_failure(SkipRetry("no"), 1, 25, lambda attempt: 1.0)
    assert decision.outcome == "dead"
    assert "SkipRetry" in decision.reason


@pytest.mark.parametrize("delay,expected", [(7, 7.0), (0, 0.0), (timedelta(minutes=2), 120.0)])
def test_retry_uses_its_delay(delay, expected):
    decision = decide_failure(Retry(delay=delay), 1, 3, lambda attempt: 999.0)
    assert (decision.outcome, decision.delay) == ("retry", expected)


def test_retry_without_delay_uses_the_backoff():
    decision = decide_failure(Retry(), 2, 3, lambda attempt: attempt * 10.0)
    assert (decision.outcome, decision.delay) == ("retry", 20.0)


def test_retry_with_no_attempts_left_is_dead():
    assert decide_failure(Retry(delay=1), 4, 3, None).outcome == "dead"


def test_retry_refuses_negative_delay():
    with pytest.raises(ValueError):
        Retry(delay=-1)


def test_custom_backoff_is_called_with_the_attempt():
    seen = []

    def backoff(attempt):
        seen.append(attempt)
        return 2.5

    decision = decide_failure(RuntimeError("x"), 3, 5, backoff)
    assert (decision.outcome, decision.delay, seen) == ("retry", 2.5, [3])


def test_negative_custom_backoff_is_clamped_to_zero():
    assert decide_failure(RuntimeError("x"), 1, 5, lambda attempt: -3).delay == 0.0


def test_reconnect_delay_doubles_up_to_its_cap_with_jitter():
    from django_bgtasks.backoff import reconnect_delay

    assert [reconnect_delay(n, base=0.5, cap=30.0, jitter=False) for n in range(8)] == \
        [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    delays = [reconnect_delay(3) for _ in range(200)]  # 0.8 s, jittered to 50-100 %
    assert all(0.4 <= d <= 0.8 for d in delays) and max(delays) - min(delays) > 0.2
