"""How the broker connects: REDIS_URL (with AUTH), or a django-redis CACHE_ALIAS."""

from __future__ import annotations

import pytest

from demo.tasks import add
from django_bgtasks import EnqueueError, get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.connection import describe_target, parse_node, split_cluster_url


def test_describe_target_never_shows_the_password():
    assert describe_target("redis://user:s3cret@db.example:6380/2") == "redis://db.example:6380/2"
    assert describe_target("rediss://:s3cret@host/0") == "rediss://host:6379/0"
    assert describe_target("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock"


def test_cluster_urls_and_nodes_are_parsed_without_showing_credentials():
    first, nodes = split_cluster_url("rediss+cluster://u:pw@h1:7000,h2:7001/0?ssl_cert_reqs=none")
    assert first == "rediss://u:pw@h1:7000/0?ssl_cert_reqs=none"
    assert nodes == [("h1", 7000), ("h2", 7001)]
    assert describe_target("redis+cluster://u:pw@h1:7000,h2:7001/0") == (
        "redis+cluster://h1:7000,h2:7001")
    assert parse_node(("h", 1)) == ("h", 1) and parse_node("10.0.0.1:26379") == (
        "10.0.0.1", 26379)
    for bad in ("h", "h:0", "h:x", ":7000", ("h",)):
        with pytest.raises(ValueError):
            parse_node(bad)


def test_one_redis_fails_fast_and_a_sentinel_client_rides_out_failovers(settings):
    # no connection is made: only the client's kind and retry policy are looked at
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": "redis://127.0.0.1:1/0"}
    assert (get_broker().kind, get_broker().retry_for) == ("single", 0)
    settings.BGTASKS = {**settings.BGTASKS, "RETRY_FOR": 2.5}
    assert get_broker().retry_for == 2.5
    settings.BGTASKS = {**settings.BGTASKS, "RETRY_FOR": None,
                        "SENTINELS": ["127.0.0.1:1"], "MASTER_NAME": "mymaster",
                        "REDIS_URL": "redis://:pw@mymaster/0"}
    broker = get_broker()  # no connection is made until a command
    assert (broker.kind, broker.retry_for) == ("sentinel", 10.0)
    assert "mymaster" in broker.target and "pw" not in broker.target
    assert broker._master_watch is not None


def test_an_unreachable_master_is_retried_for_retry_for_then_a_clear_error(settings):
    import time

    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": "redis://127.0.0.1:1/0",
                        "RETRY_FOR": 1.0}
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        add.enqueue(1, 2)
    assert 0.7 <= time.monotonic() - started < 3  # retried until the next try would pass 1 s


def test_cache_alias_reuses_the_django_redis_connection(settings, cache_redis):
    settings.BGTASKS = {**settings.BGTASKS, "CACHE_ALIAS": "default",
                        "REDIS_URL": "redis://127.0.0.1:1/0"}  # would fail if it were used
    broker = get_broker()
    assert "cache alias 'default'" in broker.target
    info = add.enqueue(1, 2)
    assert get_task_info(info.id).state == "pending"
    with cache_redis.client() as client:
        assert client.zcard("bgtasks:{default}:pending") == 1


@pytest.fixture
def password(redis_server):
    with redis_server.client() as client:
        client.config_set("requirepass", "s3cret")
    yield "s3cret"
    import redis

    with redis.Redis(port=redis_server.port, password="s3cret") as client:
        client.config_set("requirepass", "")


@pytest.mark.single_redis(reason="sets requirepass on the session's redis-server")
def test_auth_url_works_and_a_wrong_password_is_a_clear_error(settings, redis_server, password):
    base = f"127.0.0.1:{redis_server.port}/0"
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis://:{password}@{base}"}
    assert add.enqueue(2, 3).state == "pending"

    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis://:wrong@{base}"}
    with pytest.raises(EnqueueError) as caught:
        add.enqueue(2, 3)
    message = str(caught.value)
    assert ":wrong@" not in message  # no credentials shown
    assert f"redis://127.0.0.1:{redis_server.port}/0" in message
    assert "password" in message.lower()
    print(message)
