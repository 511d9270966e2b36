"""When periodic tasks fire: cron specs and fixed intervals, as UTC epoch milliseconds.

The only module that imports cronsim, so the cron library can be swapped here alone.
Ticks are ints (UTC epoch milliseconds) so the Lua scripts can compare them.

Cron specs have 5 fields, or 6 with a leading seconds field, and are evaluated in the
entry's time zone with Debian cron's DST rules (cronsim implements them for 5-field
specs): a fixed time skipped by spring-forward runs right after the change, a fixed time
repeated by fall-back runs once, and wildcard-hour specs follow elapsed time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["CronSchedule", "EverySchedule", "Schedule", "default_tz_name", "parse_schedule"]

# ticks_between walks one tick at a time; a caller wanting more than this is a bug
# (catch_up="all" caps at 100).
MAX_TICKS = 10_000


def default_tz_name() -> str:
    """The time zone of a cron entry declared without `tz`: settings.TIME_ZONE, else UTC."""
    from django.conf import settings

    # Django interprets naive times in TIME_ZONE whether or not USE_TZ is on, so that is
    # where a user reads "at 02:30"; TIME_ZONE = None means "the host's zone", which
    # differs between hosts and would break "every host computes the same tick".
    return getattr(settings, "TIME_ZONE", None) or "UTC"


class Schedule:
    """The ticks of one periodic entry; `spec` and `tz` are for display."""

    spec: str
    tz: str

    def next_after(self, ms: int) -> int:
        """The first tick strictly after `ms`."""
        raise NotImplementedError

    def previous_at_or_before(self, ms: int) -> int | None:
        """The latest tick at or before `ms`, or None if there is none."""
        raise NotImplementedError

    def describe(self) -> str:
        """The schedule in words, for the admin."""
        raise NotImplementedError

    def ticks_between(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """Ticks t with after_ms < t <= until_ms, ascending, the earliest `limit` of them."""
        if not 0 <= limit <= MAX_TICKS:
            raise ValueError(f"limit must be between 0 and {MAX_TICKS}, got {limit}")
        ticks: list[int] = []
        tick = after_ms
        while len(ticks) < limit:
            tick = self.next_after(tick)
            if tick > until_ms:
                break
            ticks.append(tick)
        return ticks


@dataclass(frozen=True)
class EverySchedule(Schedule):
    """A tick every `interval_ms`, at the multiples of it since the Unix epoch.

    Anchoring to the epoch (not to a start time) lets every host compute the same ticks
    without sharing state, and keeps them stable across restarts.
    """

    interval_ms: int
    spec: str = field(init=False)
    tz: str = field(init=False, default="UTC")

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", f"every {_interval_words(self.interval_ms)}")

    def next_after(self, ms: int) -> int:
        """The first tick strictly after `ms`."""
        return (ms // self.interval_ms + 1) * self.interval_ms

    def previous_at_or_before(self, ms: int) -> int | None:
        """The latest tick at or before `ms`."""
        return ms // self.interval_ms * self.interval_ms

    def describe(self) -> str:
        """E.g. "every 5 minutes"."""
        return self.spec


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A cron spec evaluated in time zone `tz`."""

    spec: str
    tz: str

    def __post_init__(self) -> None:
        # Fails early, with cronsim's reason, on a bad spec.
        self._cronsim(0, reverse=False)

    def _cronsim(self, seconds: int, reverse: bool) -> CronSim:
        start = datetime.fromtimestamp(seconds, UTC).astimezone(ZoneInfo(self.tz))
        try:
            return CronSim(self.spec, start, reverse=reverse)
        except CronSimError as exc:
            raise ValueError(f"invalid cron spec {self.spec!r}: {exc}") from None

    def _first(self, it: CronSim) -> int:
        try:
            return int(next(it).timestamp()) * 1000
        except StopIteration:
            raise ValueError(f"cron spec {self.spec!r} has no tick within 50 years") from None

    def next_after(self, ms: int) -> int:
        """The first tick strictly after `ms`."""
        # Cron ticks are whole seconds; cronsim yields ticks strictly after its start.
        seconds = ms // 1000
        it = self._cronsim(seconds, reverse=False)
        tick = self._first(it)
        # For 5-field fixed-time specs cronsim iterates on the naive local clock, so a
        # start inside a fall-back's repeated hour (e.g. 01:10 EST) can yield that day's
        # earlier 01:30 EDT, which precedes the start: already fired, skip it.
        while tick <= ms:
            tick = self._first(it)
        return tick

    def previous_at_or_before(self, ms: int) -> int | None:
        """The latest tick at or before `ms`, or None if there is none within 50 years."""
        # cronsim's reverse iteration yields ticks strictly before a whole-second start.
        it = self._cronsim(ms // 1000 + 1, reverse=True)
        try:
            tick = int(next(it).timestamp()) * 1000
        except StopIteration:
            return None
        # Reverse iteration on the naive local clock misses ticks in a fall-back's
        # repeated hour (from 01:10 EST it finds yesterday's 01:30, not today's 01:30
        # EDT): walk forward, which next_after gets right, to the true latest tick.
        while tick > ms:  # defensive: never seen, but the contract is "at or before"
            tick = self._first(it)
        while (later := self.next_after(tick)) <= ms:
            tick = later
        return tick

    def describe(self) -> str:
        """cronsim's wording, e.g. "At 02:30 every day"."""
        return self._cronsim(0, reverse=False).explain()


_UNITS = (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000), ("second", 1000))


def _interval_words(interval_ms: int) -> str:
    """5 min -> "5 minutes", 1 h -> "hour", 90 min -> "1 hour 30 minutes"."""
    parts = []
    rest = interval_ms
    for name, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append((count, name))
    if rest:
        parts.append((rest, "millisecond"))
    if len(parts) == 1 and parts[0][0] == 1:
        return parts[0][1]
    return " ".join(f"{count} {name}{'s' if count != 1 else ''}" for count, name in parts)


def parse_schedule(
    cron: str | None = None, every: timedelta | None = None, tz: str | None = None
) -> Schedule:
    """Build the schedule of a periodic entry; ValueError names what is wrong.

    `tz` applies to cron specs and defaults to default_tz_name(). It is refused with
    `every`, whose ticks are epoch-anchored UTC multiples: every=timedelta(days=1) fires
    at 00:00 UTC, and a user writing tz= expects local midnight, which is a cron spec.
    """
    if (cron is None) == (every is None):
        raise ValueError("a periodic task needs exactly one of cron= and every=")
    if every is not None:
        if tz is not None:
            raise ValueError(
                "tz= applies only to cron= schedules: every= ticks are multiples of the "
                "interval since the Unix epoch (UTC); use a cron spec for local times"
            )
        if not isinstance(every, timedelta):
            raise ValueError(f"every= must be a datetime.timedelta, got {every!r}")
        if every < timedelta(seconds=1):
            raise ValueError(f"every= must be at least 1 second, got {every}")
        if every.microseconds % 1000:
            raise ValueError(f"every= must be a whole number of milliseconds, got {every}")
        return EverySchedule(every // timedelta(milliseconds=1))
    if not isinstance(cron, str):
        raise ValueError(f"cron= must be a string, got {cron!r}")
    tz_name = tz if tz is not None else default_tz_name()
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ValueError(f"unknown time zone {tz_name!r}") from None
    spec = " ".join(cron.split())
    fields = spec.split(" ")
    # cronsim applies Debian's DST rules to 5-field specs only: a 6-field spec at a fixed
    # time follows elapsed time, so in a DST zone "0 30 2 * * *" would skip the
    # spring-forward day and "0 30 1 * * *" would run twice on the fall-back day.
    if (
        len(fields) == 6
        and not fields[1].startswith("*")
        and not fields[2].startswith("*")
        and _observes_dst(ZoneInfo(tz_name))
    ):
        raise ValueError(
            f"cron spec {spec!r} has a seconds field and a fixed time in {tz_name}, "
            "which observes DST: it would be skipped or run twice on change days; "
            "use a 5-field spec (no seconds) or tz='UTC'"
        )
    return CronSchedule(spec, tz_name)


def _observes_dst(zone: ZoneInfo) -> bool:
    """Whether `zone`'s UTC offset differs between January and July of this year."""
    year = datetime.now(UTC).year
    return datetime(year, 1, 1, tzinfo=zone).utcoffset() != datetime(
        year, 7, 1, tzinfo=zone
    ).utcoffset()
