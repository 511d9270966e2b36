"""System checks for BGTASKS (bgtasks.E001...) and the Redis reachability deploy check."""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning

from django_bgtasks.checks import check_redis_server, check_settings
from helpers import assert_no_password_half, free_port, settings_with_split_password

# A plain URL under the values a test checks, so that they are judged alone: with
# BGTASKS_TEST_TOPOLOGY=cluster, the session's redis+cluster:// URL beside CACHE_ALIAS or
# SENTINELS would add an E014 of its own. Tests that reach Redis name their URL.
PLAIN_URL = "redis://127.0.0.1:6399/0"


def bgtasks(settings, **values) -> None:
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": PLAIN_URL, **values}


def ids(problems) -> list[str]:
    return [p.id for p in problems]


def test_test_project_settings_are_valid():
    assert check_settings() == []


def test_empty_or_missing_setting_is_valid(settings):
    settings.BGTASKS = {}
    assert check_settings() == []
    del settings.BGTASKS
    assert check_settings() == []


def test_full_valid_setting(settings):
    settings.BGTASKS = {
        "REDIS_URL": "rediss://:secret@redis.example.com:6380/2", "PREFIX": "myapp",
        "QUEUES": {"default": 1, "mail": 3}, "STRICT_PRIORITY": True, "EAGER": False,
        "ENQUEUE_ON_COMMIT": False, "DEAD_MAX_TASKS": 0, "DEAD_MAX_AGE": 3600,
        "LEASE_SECONDS": 0.5, "MAX_MESSAGE_BYTES": 16 * 2**20, "BULK_BATCH": 10_000,
    }
    assert check_settings() == []
    bgtasks(settings, REDIS_URL="unix:///run/redis.sock")
    assert check_settings() == []


def test_setting_not_a_dict(settings):
    settings.BGTASKS = [("REDIS_URL", "redis://x")]
    assert ids(check_settings()) == ["bgtasks.E001"]


@pytest.mark.parametrize("values,expected", [
    ({"QUEUES": {}}, "bgtasks.E004"),
    ({"QUEUES": ["default"]}, "bgtasks.E004"),
    ({"QUEUES": "default,mail:3"}, "bgtasks.E004"),
    ({"QUEUES": {"a:b": 1}}, "bgtasks.E004"),
    ({"QUEUES": {"{x}": 1}}, "bgtasks.E004"),
    ({"QUEUES": {"has space": 1}}, "bgtasks.E004"),
    ({"QUEUES": {"": 1}}, "bgtasks.E004"),
    ({"QUEUES": {"default": 0}}, "bgtasks.E005"),
    ({"QUEUES": {"default": -2}}, "bgtasks.E005"),
    ({"QUEUES": {"default": 1.5}}, "bgtasks.E005"),
    ({"QUEUES": {"default": "3"}}, "bgtasks.E005"),
    ({"QUEUES": {"default": True}}, "bgtasks.E005"),
    ({"REDIS_URL": "http://localhost:6379/0"}, "bgtasks.E003"),
    ({"REDIS_URL": "localhost:6379"}, "bgtasks.E003"),
    ({"REDIS_URL": ""}, "bgtasks.E003"),
    ({"REDIS_URL": None}, "bgtasks.E003"),
    ({"CACHE_ALIAS": "nope"}, "bgtasks.E002"),
    ({"PREFIX": ""}, "bgtasks.E006"),
    ({"PREFIX": "a{b}"}, "bgtasks.E006"),
    ({"PREFIX": "a b"}, "bgtasks.E006"),
    ({"LEASE_SECONDS": 0}, "bgtasks.E007"),
    ({"LEASE_SECONDS": -5}, "bgtasks.E007"),
    ({"LEASE_SECONDS": "30"}, "bgtasks.E007"),
    ({"LEASE_SECONDS": True}, "bgtasks.E007"),
    ({"LEASE_SECONDS": None}, "bgtasks.E007"),
    ({"DEAD_MAX_AGE": 0}, "bgtasks.E007"),
    ({"DEAD_MAX_TASKS": -1}, "bgtasks.E008"),
    ({"DEAD_MAX_TASKS": 1.5}, "bgtasks.E008"),
    ({"DEAD_MAX_TASKS": "100"}, "bgtasks.E008"),
    ({"DEAD_MAX_TASKS": True}, "bgtasks.E008"),
    ({"DEAD_MAX_TASKS": None}, "bgtasks.E008"),
    ({"CANCELLED_MAX_AGE": 0}, "bgtasks.E007"),
    ({"EXPIRED_MAX_AGE": "7d"}, "bgtasks.E007"),
    ({"CANCELLED_MAX_TASKS": -1}, "bgtasks.E008"),
    ({"EXPIRED_MAX_TASKS": 2.5}, "bgtasks.E008"),
    ({"EXPIRED_MAX_TASKS": True}, "bgtasks.E008"),
    ({"EAGER": "yes"}, "bgtasks.E009"),
    ({"STRICT_PRIORITY": 1}, "bgtasks.E009"),
    ({"ENQUEUE_ON_COMMIT": None}, "bgtasks.E009"),
    ({"REDIS_URL": "redis+cluster:///0"}, "bgtasks.E003"),
    ({"REDIS_URL": "redis://:pw@host:6379/db0"}, "bgtasks.E003"),
    ({"CLUSTER_NODES": ["h1:7000", "h2"]}, "bgtasks.E014"),
    ({"CLUSTER_NODES": []}, "bgtasks.E014"),
    ({"SENTINELS": ["h1:26379"]}, "bgtasks.E014"),  # no MASTER_NAME
    ({"SENTINELS": [("h1", "x")], "MASTER_NAME": "m"}, "bgtasks.E014"),
    ({"SENTINELS": ["h1:26379"], "MASTER_NAME": "m", "CACHE_ALIAS": "default"},
     "bgtasks.E014"),
    ({"RETRY_FOR": -1}, "bgtasks.E014"),
    ({"WAIT_REPLICAS": 1.5}, "bgtasks.E014"),
    ({"WAIT_TIMEOUT": 0}, "bgtasks.E014"),
    ({"SENTINEL_KWARGS": ["password"]}, "bgtasks.E014"),
    ({"MAX_MESSAGE_BYTES": 0}, "bgtasks.E016"),
    ({"MAX_MESSAGE_BYTES": -1}, "bgtasks.E016"),
    ({"MAX_MESSAGE_BYTES": 1.5e6}, "bgtasks.E016"),
    ({"MAX_MESSAGE_BYTES": "1MB"}, "bgtasks.E016"),
    ({"MAX_MESSAGE_BYTES": True}, "bgtasks.E016"),
    ({"MAX_MESSAGE_BYTES": None}, "bgtasks.E016"),
    ({"BULK_BATCH": 0}, "bgtasks.E017"),
    ({"BULK_BATCH": 10_001}, "bgtasks.E017"),
    ({"BULK_BATCH": 50.0}, "bgtasks.E017"),
    ({"ENQUEUE_JOURNAL_SECONDS": -1}, "bgtasks.E018"),
    ({"CANCEL_GRACE": -1}, "bgtasks.E021"),
    ({"CANCEL_GRACE": "10"}, "bgtasks.E021"),
    ({"CANCEL_GRACE": float("inf")}, "bgtasks.E021"),
    ({"CANCEL_GRACE": True}, "bgtasks.E021"),
    ({"ENQUEUE_JOURNAL_SECONDS": "10"}, "bgtasks.E018"),
    ({"ENQUEUE_JOURNAL_SECONDS": 3601}, "bgtasks.E018"),
    ({"BULK_BATCH": True}, "bgtasks.E017"),
])
def test_invalid_values(settings, values, expected):
    bgtasks(settings, **values)
    problems = check_settings()
    assert ids(problems) == [expected], problems
    assert all(isinstance(p, Error) for p in problems)
    assert all("BGTASKS" in p.msg for p in problems)


@pytest.mark.parametrize("char", "/#?")
def test_a_password_split_by_an_unencoded_character_is_reported_without_it(settings, char):
    base = settings.BGTASKS
    for what, values in settings_with_split_password(char).items():
        settings.BGTASKS = {**base, "REDIS_URL": PLAIN_URL, **values}
        problems = check_settings()
        assert problems and all(isinstance(p, Error) for p in problems), what
        text = "\n".join(f"{p.msg} {p.hint}" for p in problems)
        assert_no_password_half(text)
        if "as a URL" in what:
            assert "is not 'host:port'" in text, what
        else:
            assert ids(problems) == ["bgtasks.E003"], (what, problems)
            assert "malformed Redis URL" in text and "percent-encoded" in text, what


def test_every_problem_is_reported(settings):
    bgtasks(settings, QUEUES={"a:b": 0}, LEASE_SECONDS=0, DEAD_MAX_TASKS=-1, UNKNOWN=1)
    assert sorted(ids(check_settings())) == [
        "bgtasks.E004", "bgtasks.E005", "bgtasks.E007", "bgtasks.E008", "bgtasks.W001"]


def test_unknown_keys_warn(settings):
    bgtasks(settings, LEASE_SECOND=30, REDIS=1)
    [problem] = check_settings()
    assert isinstance(problem, Warning) and not isinstance(problem, Error)
    assert problem.id == "bgtasks.W001"
    assert "LEASE_SECOND" in problem.msg and "REDIS" in problem.msg
    assert "LEASE_SECONDS" in problem.hint


def test_cache_alias_of_a_django_redis_cache_is_valid(settings):
    bgtasks(settings, CACHE_ALIAS="default", REDIS_URL="not checked when an alias is set")
    assert check_settings() == []


def test_cache_alias_without_a_socket_timeout_warns_w003(settings):
    settings.CACHES = {**settings.CACHES, "blocking": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}
    bgtasks(settings, CACHE_ALIAS="blocking")
    [problem] = check_settings()
    assert problem.id == "bgtasks.W003" and isinstance(problem, Warning)
    assert "'blocking'" in problem.msg and "SOCKET_TIMEOUT" in problem.hint


def test_cache_alias_of_another_backend(settings):
    settings.CACHES = {**settings.CACHES, "local": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    bgtasks(settings, CACHE_ALIAS="local")
    [problem] = check_settings()
    assert problem.id == "bgtasks.E002"
    assert "LocMemCache" in problem.msg


def test_cache_alias_of_wrong_type(settings):
    bgtasks(settings, CACHE_ALIAS=["default"])
    assert ids(check_settings()) == ["bgtasks.E002"]


def test_redis_reachable_passes_when_it_answers():
    assert check_redis_server() == []


def test_redis_unreachable_is_e010(settings):
    port = free_port()
    bgtasks(settings, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    [problem] = check_redis_server()
    assert problem.id == "bgtasks.E010"
    assert f"127.0.0.1:{port}" in problem.msg


def test_redis_reachable_through_a_cache_alias(settings):
    bgtasks(settings, CACHE_ALIAS="default", REDIS_URL="redis://127.0.0.1:1/0")
    assert check_redis_server() == []


def test_redis_check_is_skipped_when_settings_are_invalid(settings):
    bgtasks(settings, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", LEASE_SECONDS=0)
    assert check_redis_server() == []


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_a_policy_that_may_evict_task_keys_warns_w002(redis_server, policy):
    with redis_server.client() as client:
        client.config_set("maxmemory-policy", policy)
        try:
            [problem] = check_redis_server()
        finally:
            client.config_set("maxmemory-policy", "noeviction")
    assert problem.id == "bgtasks.W002" and isinstance(problem, Warning)
    assert repr(policy) in problem.msg and "noeviction" in problem.hint


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-ttl"])
def test_policies_that_never_evict_task_keys_pass(redis_server, policy):
    # task data carries no TTL, so volatile-* policies never choose it
    with redis_server.client() as client:
        client.config_set("maxmemory-policy", policy)
        try:
            assert check_redis_server() == []
        finally:
            client.config_set("maxmemory-policy", "noeviction")
