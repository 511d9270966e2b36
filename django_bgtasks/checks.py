"""System checks for the BGTASKS setting (ids bgtasks.E001...) and Redis reachability."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register

from . import registry
from .broker import get_broker
from .broker.connection import CLUSTER_SCHEMES, check_url, parse_nodes, url_scheme
from .broker.keys import validate_queue_name
from .conf import DEFAULTS
from .exceptions import BgTasksError, InvalidRedisSetting
from .hooks import hook_problems
from .limits import parse_named_limit
from .periodic import entries


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _check_queues(queues: Any) -> list[Error]:
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
    else:
        try:
            check_url(url)
        except InvalidRedisSetting as exc:  # its message quotes no part of the URL
            found.append(Error(str(exc), id="bgtasks.E003"))
    found += _check_topology(cfg)
    found += _check_queues(cfg["QUEUES"])
    prefix = cfg["PREFIX"]
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} "):
        found.append(Error("BGTASKS['PREFIX'] must be a non-empty string without braces or "
                           "spaces.", id="bgtasks.E006"))
    for key in ("LEASE_SECONDS", "DEAD_MAX_AGE", "CANCELLED_MAX_AGE", "EXPIRED_MAX_AGE",
                "SOCKET_TIMEOUT", "CONNECT_TIMEOUT"):
        if not _positive_number(cfg[key]):
            found.append(Error(f"BGTASKS[{key!r}] must be a positive number of seconds.",
                               id="bgtasks.E007"))
    for key in ("DEAD_MAX_TASKS", "CANCELLED_MAX_TASKS", "EXPIRED_MAX_TASKS"):
        kept = cfg[key]
        if not isinstance(kept, int) or isinstance(kept, bool) or kept < 0:
            found.append(Error(f"BGTASKS[{key!r}] must be an integer >= 0.",
                               id="bgtasks.E008"))
    for key in ("STRICT_PRIORITY", "EAGER", "CAPTURE", "ENQUEUE_ON_COMMIT"):
        if not isinstance(cfg[key], bool):
            found.append(Error(f"BGTASKS[{key!r}] must be True or False.", id="bgtasks.E009"))
    max_bytes = cfg["MAX_MESSAGE_BYTES"]
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        found.append(Error("BGTASKS['MAX_MESSAGE_BYTES'] must be a positive integer (bytes).",
                           id="bgtasks.E016"))
    batch = cfg["BULK_BATCH"]
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 10_000:
        found.append(Error("BGTASKS['BULK_BATCH'] must be an integer from 1 to 10,000 (tasks "
                           "per script call of a bulk job).", id="bgtasks.E017"))
    journal = cfg["ENQUEUE_JOURNAL_SECONDS"]
    if not (isinstance(journal, (int, float)) and not isinstance(journal, bool)
            and 0 <= journal <= 3600):
        found.append(Error("BGTASKS['ENQUEUE_JOURNAL_SECONDS'] must be a number of seconds "
                           "from 0 (off) to 3600.", id="bgtasks.E018"))
    grace = cfg["CANCEL_GRACE"]
    if not (isinstance(grace, (int, float)) and not isinstance(grace, bool)
            and 0 <= grace < float("inf")):
        found.append(Error("BGTASKS['CANCEL_GRACE'] must be a number of seconds >= 0 (how "
                           "long a running task has to stop once its cancel is requested).",
                           id="bgtasks.E021"))
    if not _positive_number(cfg["WORKFLOW_KEEP"]) or cfg["WORKFLOW_KEEP"] == float("inf"):
        found.append(Error("BGTASKS['WORKFLOW_KEEP'] must be a number of seconds > 0 (how "
                           "long a workflow is kept once all its members have ended).",
                           id="bgtasks.E022"))
    most = cfg["WORKFLOW_MAX_RESULTS"]
    if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= 1_000_000:
        found.append(Error("BGTASKS['WORKFLOW_MAX_RESULTS'] must be an integer from 1 to "
                           "1,000,000 (the most results a workflow step hands to the next).",
                           id="bgtasks.E023"))
    found += [Error(f"BGTASKS['HOOKS']: {problem}.", id="bgtasks.E024",
                    hint="List dotted paths of django_bgtasks.hooks.TaskHook subclasses.")
              for problem in hook_problems(cfg["HOOKS"])]
    if not isinstance(cfg["PERIODIC"], (list, tuple)):
        found.append(Error("BGTASKS['PERIODIC'] must be a list of periodic entries (dicts).",
                           id="bgtasks.E013"))
    return found


def _check_topology(cfg: dict[str, Any]) -> list[Error]:
    """Cluster nodes, Sentinel and the failover options (bgtasks.E014)."""
    problems: list[str] = []
    url = cfg["REDIS_URL"] if isinstance(cfg["REDIS_URL"], str) else ""
    cluster_url = url_scheme(url) in CLUSTER_SCHEMES  # the URL itself is E003's
    nodes, sentinels = cfg["CLUSTER_NODES"], cfg["SENTINELS"]
    for key, value in (("CLUSTER_NODES", nodes), ("SENTINELS", sentinels)):
        if value is not None:
            try:
                parse_nodes(value, key)
            except InvalidRedisSetting as exc:
                problems.append(str(exc))
    if sentinels and not (isinstance(cfg["MASTER_NAME"], str) and cfg["MASTER_NAME"]):
        problems.append("BGTASKS['SENTINELS'] needs BGTASKS['MASTER_NAME'], the name the "
                        "sentinels monitor the master under.")
    if sum(bool(x) for x in (cluster_url or nodes, sentinels, cfg["CACHE_ALIAS"])) > 1:
        problems.append("BGTASKS sets more than one of a cluster (redis+cluster:// or "
                        "CLUSTER_NODES), SENTINELS and CACHE_ALIAS: set one.")
    if not isinstance(cfg["SENTINEL_KWARGS"], dict):
        problems.append("BGTASKS['SENTINEL_KWARGS'] must be a dict.")
    retry_for = cfg["RETRY_FOR"]
    if retry_for is not None and (not isinstance(retry_for, (int, float))
                                  or isinstance(retry_for, bool) or retry_for < 0):
        problems.append("BGTASKS['RETRY_FOR'] must be None or a number of seconds >= 0.")
    replicas = cfg["WAIT_REPLICAS"]
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        problems.append("BGTASKS['WAIT_REPLICAS'] must be an integer >= 0.")
    if not _positive_number(cfg["WAIT_TIMEOUT"]):
        problems.append("BGTASKS['WAIT_TIMEOUT'] must be a positive number of seconds.")
    return [Error(problem, id="bgtasks.E014") for problem in problems]


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
    return [Error(problem, id="bgtasks.E013") for problem in entries()[1]]


@register(Tags.compatibility)
def check_limits(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """BGTASKS['LIMITS'] is valid (bgtasks.E019); every named limit a registered task uses
    exists (E020); a named limit counts per queue, so one used by tasks of several queues
    is flagged (W006)."""
    user = getattr(django_settings, "BGTASKS", {})
    limits = user.get("LIMITS", {}) if isinstance(user, dict) else {}
    if not isinstance(limits, dict):
        return [Error("BGTASKS['LIMITS'] must be a dict of named limits: "
                      "{'stripe': {'concurrency': 20, 'rate': '50/s'}}.", id="bgtasks.E019")]
    found: list[Error | Warning] = []
    for name, spec in limits.items():
        try:
            parse_named_limit(name, spec)
        except ValueError as exc:
            found.append(Error(f"BGTASKS['LIMITS']: {exc}.", id="bgtasks.E019"))
    queues_of: dict[str, set[str]] = {}
    for task in registry.all_tasks():
        for name in getattr(task, "limits", ()):
            queues_of.setdefault(name, set()).add(task.queue_name)
            if name not in limits:
                found.append(Error(
                    f"Task {task.name} uses the limit {name!r}, which is not in "
                    f"BGTASKS['LIMITS'].", hint="Add it, e.g. BGTASKS['LIMITS'] = "
                    f"{{{name!r}: {{'concurrency': 10}}}}.", id="bgtasks.E020"))
    for name, queues in sorted(queues_of.items()):
        if len(queues) > 1:
            found.append(Warning(
                f"The limit {name!r} is used by tasks of the queues "
                f"{', '.join(sorted(queues))}: a limit counts the runs of one queue, so each "
                f"of these queues gets the whole limit.",
                hint="Put the tasks that share a limit in one queue (a queue per external "
                     "service is the usual layout).", id="bgtasks.W006"))
    return found


@register(Tags.compatibility, deploy=True)
def check_capture(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Deploy check: the test setting CAPTURE is not left on."""
    user = getattr(django_settings, "BGTASKS", {})
    if not (isinstance(user, dict) and user.get("CAPTURE") is True):
        return []
    return [Warning("BGTASKS['CAPTURE'] is on: enqueue() records tasks in memory and never "
                    "writes them to Redis.",
                    hint="CAPTURE is for tests (django_bgtasks.testing); remove it from "
                         "production settings.", id="bgtasks.W005")]


@register(Tags.database, deploy=True)
def check_redis_server(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """Deploy check: the configured Redis answers, and will not evict task data."""
    if any(isinstance(problem, Error) for problem in check_settings()):
        return []  # the settings errors say more than a failed connection would
    try:
        broker = get_broker()  # a cluster's client connects as it is made
        broker.ping()
    except BgTasksError as exc:
        return [Error(f"Redis for django-bgtasks is not reachable: {exc}", id="bgtasks.E010")]
    try:
        warning = eviction_warning(broker.eviction_policy())
    except BgTasksError:
        return []  # INFO denied (an ACL user without it): the policy cannot be judged
    return [warning] if warning else []
