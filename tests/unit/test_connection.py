"""How the broker connects: REDIS_URL (with AUTH), or a django-redis CACHE_ALIAS."""

from __future__ import annotations

import traceback
from urllib.parse import quote

import pytest

from demo.tasks import add
from django_bgtasks import EnqueueError, get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.connection import (
    check_url,
    describe_target,
    parse_node,
    split_cluster_url,
)
from django_bgtasks.exceptions import InvalidRedisSetting
from helpers import SPLIT_PASSWORD_HALVES, assert_no_password_half, settings_with_split_password

PLAIN_URL = "redis://127.0.0.1:1/0"  # never connected to


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


@pytest.mark.parametrize("char", "/#?")
def test_a_password_split_by_an_unencoded_character_is_a_clear_error_without_it(settings,
                                                                                char):
    base = settings.BGTASKS
    for what, values in settings_with_split_password(char).items():
        settings.BGTASKS = {**base, "REDIS_URL": PLAIN_URL, **values}
        with pytest.raises(InvalidRedisSetting) as caught:
            get_broker()  # before any connection: a wrong password would be sent
        message = str(caught.value)
        if "as a URL" in what:
            assert "is not 'host:port'" in message, what
        else:
            assert "BGTASKS['REDIS_URL'] is a malformed Redis URL" in message, what
            assert "percent-encoded" in message and "%2F, %23, %3F" in message, what
        assert_no_password_half("".join(traceback.format_exception(caught.value)))
        with pytest.raises(EnqueueError) as caught:
            add.enqueue(1, 2)
        assert message in str(caught.value), what
        assert_no_password_half("".join(traceback.format_exception(caught.value)))


def test_a_cache_alias_with_a_malformed_location_is_a_clear_error_without_it(settings):
    location = f"redis://:{'/'.join(SPLIT_PASSWORD_HALVES)}@127.0.0.1:1/0"
    settings.CACHES = {**settings.CACHES, "split": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": location}}
    settings.BGTASKS = {**settings.BGTASKS, "CACHE_ALIAS": "split"}
    with pytest.raises(InvalidRedisSetting, match="LOCATION of cache 'split' .* malformed"
                       ) as caught:
        get_broker()
    assert_no_password_half("".join(traceback.format_exception(caught.value)))


@pytest.mark.parametrize("url", [
    "redis://localhost", "redis://localhost/", "redis://h:6379/15", "redis://[::1]:6379/0",
    "redis://:p@ss:w@rd@h:6379/0",  # '@' and ':' in a password read as written
    "redis://:a%2Fb%23c%3Fd@h/0", "redis://mymaster/0?socket_keepalive=true",
    "rediss://u:pw@h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem",
    "unix:///run/redis.sock", "unix://:pw@/run/redis.sock?db=1",
    "redis+cluster://h1:7000,h2:7001", "rediss+cluster://u:pw@h1:7000,h2:7001/0?ssl=true",
    "REDIS://H:6379/0",
])
def test_well_formed_urls_pass(url):
    check_url(url)


@pytest.mark.parametrize("url", [
    "redis://h:6379/zero", "redis://h:6379/0#x", "redis://h:6379/0?flag", "redis://h:99999",
    "redis://h:6379/0?socket_timeout=soon", "redis:h:6379", "redis+cluster:///0",
    "redis+cluster://h1:7000,h2", "unix://", "http://h:6379/0",
])
def test_urls_redis_py_would_misread_or_refuse_are_errors(url):
    with pytest.raises(InvalidRedisSetting, match=r"^BGTASKS\['REDIS_URL'\]"):
        check_url(url)


@pytest.fixture
def password(request, redis_server):
    secret = getattr(request, "param", "s3cret")
    with redis_server.client() as client:
        client.config_set("requirepass", secret)
    yield secret
    import redis

    with redis.Redis(port=redis_server.port, password=secret) as client:
        client.config_set("requirepass", "")


@pytest.mark.single_redis(reason="sets requirepass on the session's redis-server")
@pytest.mark.parametrize("password", ["S3/cr#e?t@x:y%z"], indirect=True)
def test_a_percent_encoded_password_with_any_character_works(settings, redis_server,
                                                            password):
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:{redis_server.port}/0"
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": url}
    assert add.enqueue(2, 3).state == "pending"


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
