"""Health checks for probes (``manage.py bgtasks health``): is Redis reachable, does this
host's worker heartbeat, has a queue's oldest pending task waited too long.

Each check returns a HealthResult with a one-line reason; run() stops at the first failure,
so a probe's message names what is wrong, Redis before anything that needs it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from ..broker import broker_owns_client, make_broker
from ..broker.metrics import MetricsStore
from ..broker.redis import RedisBroker
from ..conf import Settings, get_settings
from ..exceptions import BgTasksError, BrokerUnavailable
from .inspect import Inspector

# A probe must answer within its own timeout (Kubernetes' timeoutSeconds): a hung or
# unreachable Redis fails it after this, not after SOCKET_TIMEOUT (10 s by default).
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class HealthResult:
    """What a check found: healthy or not, and why, in one line."""

    ok: bool
    reason: str

    @property
    def line(self) -> str:
        """'ok: <reason>' or 'unhealthy: <reason>', as the command prints it."""
        return f"{'ok' if self.ok else 'unhealthy'}: {self.reason}"


def probe_settings(cfg: Settings | None = None) -> Settings:
    """The settings with their timeouts cut to PROBE_TIMEOUT (never raised)."""
    cfg = cfg or get_settings()
    return dataclasses.replace(cfg, SOCKET_TIMEOUT=min(cfg.SOCKET_TIMEOUT, PROBE_TIMEOUT),
                               CONNECT_TIMEOUT=min(cfg.CONNECT_TIMEOUT, PROBE_TIMEOUT))


def probe_broker(cfg: Settings | None = None) -> RedisBroker:
    """A broker of its own with the probe's short timeouts (not the shared one: its client
    waits SOCKET_TIMEOUT), and no Sentinel watcher thread (a probe lives a second)."""
    return make_broker(probe_settings(cfg), watch_master=False)


def age_text(seconds: float) -> str:
    """An age in whole seconds, as probes and alerts compare it with --max-age: '312 s'."""
    return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"


class HealthCheck:
    """The checks, over one broker (probe_broker(), or a test's)."""

    def __init__(self, broker: RedisBroker,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.broker = broker
        self._clock = clock

    def redis(self) -> HealthResult:
        """Redis answers a PING (on a cluster, every master does)."""
        started = self._clock()
        try:
            self.broker.ping()
        except BgTasksError as exc:
            return HealthResult(False, f"redis unreachable: {exc}")
        elapsed_ms = (self._clock() - started) * 1000
        return HealthResult(True, f"redis reachable ({elapsed_ms:.1f} ms)")

    def worker(self, host: str) -> HealthResult:
        """A worker announced from ``host`` has a heartbeat that has not expired (the
        supervisor renews it every 5 s for 15 s, and removes it when it stops)."""
        workers = Inspector(self.broker).workers()
        mine = [w for w in workers if w.host == host]
        if not mine:
            others = len(workers)
            elsewhere = f" ({others} live on other hosts)" if others else ""
            return HealthResult(False, f"no worker on host {host} has a live heartbeat"
                                       f"{elsewhere}")
        pids = ", ".join(w.pid for w in mine)
        return HealthResult(True, f"worker on host {host} heartbeating (pid {pids})")

    def queue_age(self, queue: str, max_age: float) -> HealthResult:
        """``queue``'s oldest pending task has waited at most ``max_age`` seconds since it
        was due (nothing pending is healthy)."""
        bound = f"(max {age_text(max_age)})"
        if queue not in self.broker.known_queues() and queue not in get_settings().QUEUES:
            # a misspelt name would pass forever: nothing is ever pending there
            return HealthResult(False, f"queue {queue} is unknown (no task was ever "
                                       f"enqueued to it and BGTASKS['QUEUES'] lacks it)")
        age = MetricsStore(self.broker).pending_ages([queue])[queue]
        if age is None:
            return HealthResult(True, f"queue {queue} has no pending task {bound}")
        if age > max_age:
            return HealthResult(False, f"queue {queue}'s oldest pending task has waited "
                                       f"{age_text(age)} {bound}")
        return HealthResult(True, f"queue {queue}'s oldest pending task has waited "
                                  f"{age_text(age)} {bound}")

    def run(self, host: str | None = None, queues: Sequence[str] = (),
            max_age: float | None = None) -> HealthResult:
        """Redis, then (with ``host``) its worker, then (with ``max_age``) each queue's
        age: the first failure, or every check's reason joined."""
        checks: list[Callable[[], HealthResult]] = [self.redis]
        if host is not None:
            checks.append(partial(self.worker, host))
        if max_age is not None:
            checks += [partial(self.queue_age, queue, max_age) for queue in queues]
        reasons = []
        for check in checks:
            try:
                result = check()
            except BrokerUnavailable as exc:  # Redis went away between two checks
                return HealthResult(False, f"redis unreachable: {exc}")
            except BgTasksError as exc:
                return HealthResult(False, f"redis error: {exc}")
            if not result.ok:
                return result
            reasons.append(result.reason)
        return HealthResult(True, "; ".join(reasons))


def check_health(host: str | None = None, queues: Sequence[str] = (),
                 max_age: float | None = None) -> HealthResult:
    """Every asked check, over a probe broker made (and closed) for it."""
    try:
        broker = probe_broker()
    except BrokerUnavailable as exc:  # a cluster's client connects as it is made
        return HealthResult(False, f"redis unreachable: {exc}")
    except BgTasksError as exc:  # a malformed URL, a missing cache alias
        return HealthResult(False, f"redis settings: {exc}")
    try:
        return HealthCheck(broker).run(host, queues, max_age)
    finally:
        broker.close(close_client=broker_owns_client(broker))
