"""System checks for the BGTASKS setting (ids bgtasks.E001...) and Redis reachability."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register

from .conf import DEFAULTS

URL_SCHEMES = ("redis", "rediss", "unix")


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _check_queues(queues: Any) -> list[Error]:
    from .broker.keys import validate_queue_name

    if not isinstance(queues, dict) or not queues:
        return [Error("BGTASKS['QUEUES'] must be a non-empty dict of queue name -> weight.",
                      id="bgtasks.E004")]
    errors = []
    for name, weight in queues.items():
        try:
            validate_queue_name(name)
        except ValueError as exc:
            errors.append(Error(f"BGTASKS['QUEUES']: {exc}.", id="bgtasks.E004"))
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            errors.append(Error(f"BGTASKS['QUEUES'][{name!r}]: the weight must be an "
                                f"integer >= 1, not {weight!r}.", id="bgtasks.E005"))
    return errors


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """Validate BGTASKS."""
    user = getattr(django_settings, "BGTASKS", {})
    if not isinstance(user, dict):
        return [Error("BGTASKS must be a dict.", id="bgtasks.E001")]
    found: list[Error | Warning] = []
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        found.append(Warning(f"BGTASKS has unknown keys: {', '.join(unknown)}.",
                             hint=f"Known keys: {', '.join(DEFAULTS)}.", id="bgtasks.W001"))
    cfg = {**DEFAULTS, **user}
    url, alias = cfg["REDIS_URL"], cfg["CACHE_ALIAS"]
    if alias is not None:
        caches = getattr(django_settings, "CACHES", {})
        backend = caches.get(alias, {}).get("BACKEND", "") if isinstance(alias, str) else ""
        if not isinstance(alias, str):
            found.append(Error(f"BGTASKS['CACHE_ALIAS'] must be a cache alias (a string), "
                               f"not {alias!r}.", id="bgtasks.E002"))
        elif alias not in caches:
            found.append(Error(f"BGTASKS['CACHE_ALIAS'] = {alias!r} is not in CACHES.",
                               id="bgtasks.E002"))
        elif not backend.startswith("django_redis."):
            found.append(Error(f"BGTASKS['CACHE_ALIAS'] = {alias!r} is not a django-redis "
                               f"cache (BACKEND is {backend!r}).", id="bgtasks.E002"))
        elif not caches[alias].get("OPTIONS", {}).get("SOCKET_TIMEOUT"):
            found.append(Warning(
                f"The cache {alias!r} (BGTASKS['CACHE_ALIAS']) sets no SOCKET_TIMEOUT: "
                f"enqueue() and the worker wait forever on a Redis that stops answering.",
                hint="Add 'SOCKET_TIMEOUT': 10 and 'SOCKET_CONNECT_TIMEOUT': 5 to its "
                     "OPTIONS (BGTASKS' own REDIS_URL client sets both).",
                id="bgtasks.W003"))
    elif not isinstance(url, str) or urlsplit(url).scheme not in URL_SCHEMES:
        found.append(Error("BGTASKS['REDIS_URL'] must be a redis://, rediss:// or unix:// URL.",
                           id="bgtasks.E003"))
    found += _check_queues(cfg["QUEUES"])
    prefix = cfg["PREFIX"]
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} "):
        found.append(Error("BGTASKS['PREFIX'] must be a non-empty string without braces or "
                           "spaces.", id="bgtasks.E006"))
    for key in ("LEASE_SECONDS", "DEAD_MAX_AGE", "SOCKET_TIMEOUT", "CONNECT_TIMEOUT"):
        if not _positive_number(cfg[key]):
            found.append(Error(f"BGTASKS[{key!r}] must be a positive number of seconds.",
                               id="bgtasks.E007"))
    dead_max = cfg["DEAD_MAX_TASKS"]
    if not isinstance(dead_max, int) or isinstance(dead_max, bool) or dead_max < 0:
        found.append(Error("BGTASKS['DEAD_MAX_TASKS'] must be an integer >= 0.",
                           id="bgtasks.E008"))
    for key in ("STRICT_PRIORITY", "EAGER", "ENQUEUE_ON_COMMIT"):
        if not isinstance(cfg[key], bool):
            found.append(Error(f"BGTASKS[{key!r}] must be True or False.", id="bgtasks.E009"))
    if not isinstance(cfg["PERIODIC"], (list, tuple)):
        found.append(Error("BGTASKS['PERIODIC'] must be a list of periodic entries (dicts).",
                           id="bgtasks.E013"))
    return found


def eviction_warning(policy: str) -> Warning | None:
    """A warning when Redis' maxmemory-policy may evict task data.

    Task data has no TTL, so the volatile-* policies never pick it; the allkeys-* ones
    may delete a queue's keys when memory runs short, losing tasks without a trace.
    """
    if not policy.startswith("allkeys-"):
        return None
    return Warning(
        f"Redis' maxmemory-policy is {policy!r}: when memory runs short, Redis may evict "
        f"django-bgtasks' keys and lose tasks.",
        hint="Use maxmemory-policy noeviction (enqueue then fails with a clear error "
             "instead) or a volatile-* policy, or give django-bgtasks a Redis of its own "
             "rather than sharing a cache's.",
        id="bgtasks.W002")


@register(Tags.compatibility)
def check_periodic(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every periodic entry (decorated or in BGTASKS['PERIODIC']) is valid: its spec, time
    zone, task, JSON arguments and options; names are unique."""
    if any(isinstance(problem, Error) for problem in check_settings()):
        return []
    from .periodic import entries

    return [Error(problem, id="bgtasks.E013") for problem in entries()[1]]


@register(Tags.database, deploy=True)
def check_redis_server(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """Deploy check: the configured Redis answers, and will not evict task data."""
    if any(isinstance(problem, Error) for problem in check_settings()):
        return []  # the settings errors say more than a failed connection would
    from .broker import get_broker
    from .exceptions import BgTasksError

    broker = get_broker()
    try:
        broker.ping()
    except BgTasksError as exc:
        return [Error(f"Redis for django-bgtasks is not reachable: {exc}", id="bgtasks.E010")]
    try:
        warning = eviction_warning(broker.eviction_policy())
    except BgTasksError:
        return []  # INFO denied (an ACL user without it): the policy cannot be judged
    return [warning] if warning else []
