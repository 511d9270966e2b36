"""The test infrastructure itself: private redis-server, AOF across restarts, isolation."""

import os
import re

import pytest
from django.conf import settings
from django.core.cache import cache

from demo import recording
from helpers import wait_until


def test_server_answers_ping(bgtasks_redis):
    assert "6379" not in re.findall(r":(\d+)", bgtasks_redis.url)
    assert bgtasks_redis.client().ping()


def test_settings_and_env_point_at_the_private_server(bgtasks_redis, cache_redis):
    assert settings.REDIS_URL == bgtasks_redis.url
    assert settings.BGTASKS["REDIS_URL"] == bgtasks_redis.url
    assert settings.BGTASKS["QUEUES"] == {"default": 1, "mail": 2}
    assert settings.CACHES["default"]["LOCATION"] == cache_redis.url
    assert os.environ["BGTASKS_REDIS_URL"] == bgtasks_redis.url
    # (empty: the workers' cache follows BGTASKS_REDIS_URL)
    assert (os.environ["BGTASKS_TEST_CACHE_URL"] or os.environ["BGTASKS_REDIS_URL"]) == (
        cache_redis.url)

    cache.set("infra-probe", 1, None)
    assert cache_redis.client().dbsize() == 1  # django-redis wrote to our server


@pytest.mark.single_redis(reason="restarts the redis-server")
def test_restart_keeps_data_through_the_aof(redis_server):
    client = redis_server.client()
    client.set("survivor", "yes")
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.client().get("survivor") == b"yes"


@pytest.mark.single_redis(reason="kills and restarts the redis-server")
def test_killed_server_starts_again_on_the_same_port(redis_server):
    port = redis_server.port
    redis_server.kill()
    assert not redis_server.is_running()
    redis_server.start()
    assert redis_server.port == port
    assert redis_server.client().ping()


def test_recording_helpers_write_to_the_private_server(bgtasks_redis):
    recording.record("a")
    recording.record("b")
    recording.record("a")
    client = bgtasks_redis.client()
    assert recording.ran(client) == {"a", "b"}
    assert recording.log(client) == ["a", "b", "a"]
    assert recording.count_attempt("x") == 1
    assert recording.attempts(client, "x") == 1


def test_isolation_first_writes(bgtasks_redis):
    bgtasks_redis.client().set("leftover", "from an earlier test")
    assert wait_until(lambda: bgtasks_redis.client().exists("leftover"), timeout=1)


def test_isolation_second_sees_an_empty_server(bgtasks_redis):
    # runs after test_isolation_first_writes: FLUSHALL before each test removed its key
    assert bgtasks_redis.client().dbsize() == 0
