"""The BGTASKS setting, read lazily on each access so that override_settings works."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": "redis://localhost:6379/0",
    "CACHE_ALIAS": None,
    "PREFIX": "bgtasks",
    "QUEUES": {"default": 1},
    "STRICT_PRIORITY": False,
    "EAGER": False,
    # enqueue() records tasks in memory for the tests (django_bgtasks.testing); wins over EAGER.
    "CAPTURE": False,
    "ENQUEUE_ON_COMMIT": True,
    "DEAD_MAX_TASKS": 10_000,
    "DEAD_MAX_AGE": 180 * 24 * 3600,
    # Cancelled and expired tasks are kept like dead ones: at most this many per queue,
    # for at most this many seconds (the janitor trims the rest).
    "CANCELLED_MAX_TASKS": 10_000,
    "CANCELLED_MAX_AGE": 7 * 24 * 3600,
    "EXPIRED_MAX_TASKS": 10_000,
    "EXPIRED_MAX_AGE": 7 * 24 * 3600,
    "LEASE_SECONDS": 30,
    "PERIODIC": [],
    # Bounded waits on a Redis that stops answering: enqueue() raises EnqueueError after
    # at most this long instead of hanging a request.
    "SOCKET_TIMEOUT": 10.0,
    "CONNECT_TIMEOUT": 5.0,
    # Redis Cluster: its nodes as "host:port" (or a redis+cluster:// REDIS_URL).
    "CLUSTER_NODES": None,
    # Sentinel: [(host, port), ...] and the monitored master's name; REDIS_URL then gives
    # only the master's credentials, db and TLS options. SENTINEL_KWARGS: for connecting to
    # the sentinels themselves (e.g. their password).
    "SENTINELS": None,
    "MASTER_NAME": None,
    "SENTINEL_KWARGS": {},
    # How long enqueue() keeps retrying a Redis that cannot be reached or is failing over
    # before it raises EnqueueError. None: 0 on one Redis (fail fast), 10 s on a cluster or
    # behind Sentinel, where a failover takes seconds.
    "RETRY_FOR": None,
    # enqueue() returns only once this many replicas hold the task (WAIT), or raises.
    "WAIT_REPLICAS": 0,
    "WAIT_TIMEOUT": 0.5,
    # enqueue() refuses a task whose message (its JSON: arguments and options) is larger:
    # Redis holds it in memory, and every worker claim carries it.
    "MAX_MESSAGE_BYTES": 2**20,
    # Behind Sentinel: enqueues acknowledged in the last this many seconds are written again
    # to a new master (a failover drops what the old one had not replicated). 0: off.
    "ENQUEUE_JOURNAL_SECONDS": 10.0,
    # Tasks a bulk job (the admin's "run all" / "delete all") moves per script call: each
    # call keeps Redis busy for about 10 us per task.
    "BULK_BATCH": 500,
    # Named limits shared by tasks (docs/limits.md): {"stripe": {"concurrency": 20,
    # "rate": "50/s"}}, used as @background_task(limits=["stripe"]).
    "LIMITS": {},
    # Seconds a running task has, once its cancel is requested, to stop on its own before
    # TaskCancelled is raised in it (docs/worker.md).
    "CANCEL_GRACE": 10,
    # Workflows (docs/workflows.md): seconds a workflow's barrier is kept once every member
    # has ended; the most results a step may hand on (a chord's group, an on_complete).
    "WORKFLOW_KEEP": 7 * 24 * 3600,
    "WORKFLOW_MAX_RESULTS": 10_000,
    # Hooks around every enqueue and every attempt (docs/tracing.md): dotted paths of
    # django_bgtasks.hooks.TaskHook subclasses, outermost first. Read from settings only.
    "HOOKS": [],
    # The metrics endpoints (docs/metrics.md): who may read them; {"ACCESS": None}: off.
    "METRICS": {"ACCESS": None},
}


@dataclass(frozen=True)
class Settings:
    """The effective BGTASKS values, defaults filled in."""

    REDIS_URL: str
    CACHE_ALIAS: str | None
    PREFIX: str
    QUEUES: dict[str, int]
    STRICT_PRIORITY: bool
    EAGER: bool
    CAPTURE: bool
    ENQUEUE_ON_COMMIT: bool
    DEAD_MAX_TASKS: int
    DEAD_MAX_AGE: float
    CANCELLED_MAX_TASKS: int
    CANCELLED_MAX_AGE: float
    EXPIRED_MAX_TASKS: int
    EXPIRED_MAX_AGE: float
    LEASE_SECONDS: float
    PERIODIC: list
    SOCKET_TIMEOUT: float
    CONNECT_TIMEOUT: float
    CLUSTER_NODES: list[str] | None
    SENTINELS: list | None
    MASTER_NAME: str | None
    SENTINEL_KWARGS: dict[str, Any]
    RETRY_FOR: float | None
    WAIT_REPLICAS: int
    WAIT_TIMEOUT: float
    MAX_MESSAGE_BYTES: int
    ENQUEUE_JOURNAL_SECONDS: float
    BULK_BATCH: int
    LIMITS: dict[str, Any]
    CANCEL_GRACE: float
    WORKFLOW_KEEP: float
    WORKFLOW_MAX_RESULTS: int
    HOOKS: list[str]
    METRICS: dict[str, Any]
    unknown: tuple[str, ...] = field(default=())


def raw_settings() -> dict[str, Any]:
    """The user's BGTASKS dict as written (empty when unset)."""
    value = getattr(django_settings, "BGTASKS", None)
    return value if isinstance(value, dict) else {}


_current: Settings | None = None


def get_settings() -> Settings:
    """The current settings. Cached until Django reports a settings change (override_settings,
    pytest-django's ``settings`` fixture), so reading them costs nothing per enqueue."""
    global _current
    if _current is None:
        user = raw_settings()
        merged = {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}
        unknown = tuple(sorted(k for k in user if k not in DEFAULTS))
        _current = Settings(**merged, unknown=unknown)
    return _current


def _forget_settings(**kwargs: Any) -> None:
    global _current
    _current = None


setting_changed.connect(_forget_settings, dispatch_uid="django_bgtasks.conf.forget")
