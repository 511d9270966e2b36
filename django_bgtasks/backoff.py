"""Retry policy: pure functions, tested without Redis."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import Retry, SkipRetry


def default_backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1-based): Sidekiq's and asynq's curve."""
    return attempt**4 + 15 + random.uniform(0, 10 * (attempt + 1))


@dataclass(frozen=True)
class FailureDecision:
    outcome: str  # 'retry' or 'dead'
    delay: float  # seconds, for 'retry'
    reason: str  # why, for the log line


def decide_failure(exc: BaseException, attempt: int, max_retries: int,
                   backoff: Callable[[int], float] | None) -> FailureDecision:
    """Retry or dead-letter an attempt that raised ``exc``.

    ``attempt`` counts from 1; a task runs at most ``max_retries + 1`` times.
    """
    if isinstance(exc, SkipRetry):
        return FailureDecision("dead", 0.0, "SkipRetry raised")
    if attempt > max_retries:
        return FailureDecision("dead", 0.0, f"no retries left after {attempt} attempts")
    if isinstance(exc, Retry) and exc.delay is not None:
        return FailureDecision("retry", float(exc.delay), "Retry raised")
    delay = (backoff or default_backoff)(attempt)
    return FailureDecision("retry", max(0.0, float(delay)), "attempts left")
