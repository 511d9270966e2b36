"""Verdicts on flow control from the ledger's spans (demo.recording.record_span): how many
runs were under way at once, which tasks ran twice, when runs started around an event; and
whether a queue's limits are all idle again (no slot leaked).

Span times are milliseconds on the ledger Redis' clock; the ledger runs on this host, so
they compare with time.time() * 1000 of the test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def most_at_once(spans: Iterable[dict], pids: set[int] | None = None) -> int:
    """The most runs between their start and end at one moment (of processes `pids`
    only, if given: a SIGKILLed process's runs never end, so they would count forever)."""
    events = sorted((s["t"], 1 if s["phase"] == "start" else -1) for s in spans
                    if pids is None or s["pid"] in pids)
    running = most = 0
    for _, step in events:  # an end and a start at the same instant: the end first
        running += step
        most = max(most, running)
    return most


def ran_twice(spans: Iterable[dict]) -> dict[str, int]:
    """token -> how many times it started, for the tokens that started more than once."""
    started = Counter(s["token"] for s in spans if s["phase"] == "start")
    return {token: n for token, n in started.items() if n > 1}


def ended(spans: Iterable[dict]) -> set[str]:
    """The tokens of which a run ended."""
    return {s["token"] for s in spans if s["phase"] == "end"}


def start_times(spans: Iterable[dict], pids: set[int] | None = None) -> list[float]:
    """Start times (ms), ascending (of processes `pids` only, if given)."""
    return sorted(s["t"] for s in spans if s["phase"] == "start"
                  and (pids is None or s["pid"] in pids))


def silence_around(spans: Iterable[dict], at_ms: float) -> tuple[float, float]:
    """(seconds from the last start before `at_ms` to it, seconds from it to the first
    start after): the stretch around an event during which the limit admitted nothing."""
    times = start_times(spans)
    before = [t for t in times if t <= at_ms]
    after = [t for t in times if t > at_ms]
    return ((at_ms - before[-1]) / 1000 if before else float("inf"),
            (after[0] - at_ms) / 1000 if after else float("inf"))


def limits_idle(queue: str) -> bool:
    """True when Redis holds no limit state for `queue`: nothing runs under a limit and
    nothing waits, so every slot was given back (an idle limit is forgotten)."""
    from django_bgtasks.broker import get_broker

    return get_broker().limits(queue) == ([], 0)
