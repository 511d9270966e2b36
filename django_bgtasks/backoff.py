"""Retry policy and reconnect backoff: pure functions, tested without Redis."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import Retry, SkipRetry

# The longest wait before a retry: beyond it a delay is a mistake (a backoff curve that
# overflows), and Redis' scores and the record's timestamps must stay finite numbers.
MAX_RETRY_DELAY = 10 * 365 * 24 * 3600.0


def reconnect_delay(failures: int, base: float = 0.1, cap: float = 5.0,
                    jitter: bool = True) -> float:
    """Seconds to wait before trying Redis again after ``failures`` failures in a row:
    ``base`` doubling up to ``cap``, jittered to 50-100% so that many processes do not
    knock at once. The one curve of every reconnecting loop (worker components, the
    broker's ride-out, the Sentinel watcher, the supervisor's restarts)."""
    delay = min(cap, base * 2 ** max(0, failures))
    return delay * random.uniform(0.5, 1.0) if jitter else delay


def default_backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1-based): Sidekiq's and asynq's curve."""
    return attempt**4 + 15 + random.uniform(0, 10 * (attempt + 1))


@dataclass(frozen=True)
class FailureDecision:
    outcome: str  # 'retry' or 'dead'
    delay: float  # seconds, for 'retry'
    reason: str  # why, for the log line
    note: str = ""  # a problem with the task's own retry policy, for its error


def decide_failure(exc: BaseException, attempt: int, max_retries: int,
                   backoff: Callable[[int], float] | None) -> FailureDecision:
    """Retry or dead-letter an attempt that raised ``exc``.

    ``attempt`` counts from 1; a task runs at most ``max_retries + 1`` times. Total: a
    policy that raises or answers nonsense gets the default backoff, and says so in
    ``note``, so the attempt's outcome is always written.
    """
    if isinstance(exc, SkipRetry):
        return FailureDecision("dead", 0.0, "SkipRetry raised")
    if attempt > max_retries:
        return FailureDecision("dead", 0.0, f"no retries left after {attempt} attempts")
    if isinstance(exc, Retry) and exc.delay is not None:
        delay, note = _checked_delay(lambda: exc.delay, "Retry(delay=...)", attempt)
        return FailureDecision("retry", delay, "Retry raised", note)
    if backoff is None:
        return FailureDecision("retry", default_backoff(attempt), "attempts left")
    delay, note = _checked_delay(lambda: backoff(attempt), "retry_backoff", attempt)
    return FailureDecision("retry", delay, "attempts left", note)


def _checked_delay(compute: Callable[[], object], source: str,
                   attempt: int) -> tuple[float, str]:
    """The delay ``compute`` gives in seconds, or the default curve's and why not."""
    try:
        value = compute()
        delay = float(value)  # type: ignore[arg-type]
    except Exception as problem:  # noqa: BLE001  (a user's policy must not lose the task)
        return default_backoff(attempt), (f"{source} raised {type(problem).__name__}; the "
                                          f"default backoff was used")
    if not math.isfinite(delay):
        return default_backoff(attempt), (f"{source} gave {delay!r}, not a finite number of "
                                          f"seconds; the default backoff was used")
    return min(max(0.0, delay), MAX_RETRY_DELAY), ""  # a negative delay: retry at once
