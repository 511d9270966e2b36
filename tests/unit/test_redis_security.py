"""Redis that wants credentials: a requirepass, an ACL user, TLS (with a password).

Through each: enqueue, a real worker and the admin work; wrong credentials are a quick,
clear error; and no password ever shows in a message, a traceback, a log or a page.
Each configuration is a redis-server of its own, for the module; the session's server
stays password-free for the other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from conftest import _redis_settings
from demo import recording
from demo.tasks import record
from django_bgtasks import EnqueueError, get_task_info
from django_bgtasks.broker.keys import QueueKeys
from helpers import (
    MANAGE_PY,
    REPO_ROOT,
    SPLIT_PASSWORD_HALVES,
    BgtasksCommand,
    RedisServer,
    assert_no_password_half,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.single_redis(
    reason="its subject is a plain redis-server of its own (requirepass, ACL, TLS)")

QUICK = 5.0  # seconds within which a refused connection must fail
KEYS = QueueKeys("bgtasks", "default")
DASHBOARD = "/admin/django_bgtasks/task/"

# Distinct and URL-safe, so that finding one anywhere is a leak, never a coincidence.
REQUIREPASS = "Rq-pass-4e1d9c"
ACL_USER, ACL_PASSWORD = "bgapp", "Acl-pass-7b3f20"
ACL_ROOT_PASSWORD = "Acl-root-9a6c51"  # the tests' own user, for seeding and flushing
TLS_PASSWORD = "Tls-pass-2c8e47"
WRONG = "Wrong-pass-5d0a13"


@dataclass(frozen=True)
class Secured:
    """A redis-server that wants credentials, and the URLs the app may be given."""

    server: RedisServer
    url: str  # right credentials
    wrong_urls: dict[str, str]  # what is wrong -> URL
    secrets: tuple[str, ...]  # every password involved, right or wrong

    @property
    def target(self) -> str:
        """How messages must name the server: scheme, host, port, db; no credentials."""
        return f"{self.url.split(':', 1)[0]}://127.0.0.1:{self.server.port}/0"

    def assert_no_secret(self, text: str) -> None:
        for secret in self.secrets:
            assert secret not in text


@contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.kill()  # no-op unless stop() failed


@pytest.fixture(scope="module")
def requirepass_redis(tmp_path_factory) -> Iterator[Secured]:
    """AUTH with a password (the default user), as most hosted Redis offer."""
    server = RedisServer(tmp_path_factory.mktemp("redis-requirepass"),
                         extra_args=["--requirepass", REQUIREPASS],
                         client_kwargs={"password": REQUIREPASS})
    with running(server):
        where = f"127.0.0.1:{server.port}/0"
        yield Secured(server, f"redis://:{REQUIREPASS}@{where}",
                      {"wrong password": f"redis://:{WRONG}@{where}",
                       "no password": f"redis://{where}"},
                      (REQUIREPASS, WRONG))


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory) -> Iterator[Secured]:
    """An ACL user limited to the app's keys and channels and denied the dangerous
    commands (FLUSHALL, CONFIG, KEYS, DEBUG...) except INFO, which the worker reads at
    start-up (maxmemory-policy); the default user is disabled."""
    server = RedisServer(
        tmp_path_factory.mktemp("redis-acl"),
        extra_args=["--user", "default", "off",
                    "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~bgtasks:*",
                    "~bgtasks-test:*", "&bgtasks:*", "+@all", "-@dangerous", "+info",
                    "--user", "root", "on", f">{ACL_ROOT_PASSWORD}", "~*", "&*", "+@all"],
        client_kwargs={"username": "root", "password": ACL_ROOT_PASSWORD})
    with running(server):
        where = f"127.0.0.1:{server.port}/0"
        yield Secured(server, f"redis://{ACL_USER}:{ACL_PASSWORD}@{where}",
                      {"wrong password": f"redis://{ACL_USER}:{WRONG}@{where}",
                       "unknown user": f"redis://nobody:{ACL_PASSWORD}@{where}",
                       "no user (default is off)": f"redis://:{ACL_PASSWORD}@{where}"},
                      (ACL_PASSWORD, ACL_ROOT_PASSWORD, WRONG))


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1: (ca, cert, key).

    EC keys (generated in milliseconds); the extensions satisfy VERIFY_X509_STRICT,
    which Python 3.13's default SSL context sets.
    """
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *new_key, "-days", "2", "-subj", "/CN=django-bgtasks test CA",
         "-addext", "keyUsage = critical, keyCertSign, cRLSign",
         "-keyout", ca_key, "-out", ca],
        ["req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", extensions, "-out", cert],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> Iterator[Secured]:
    """TLS only (the plain port is off), server certificate checked against our CA,
    and a password."""
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"))
    port = free_port()
    server = RedisServer(
        tmp_path_factory.mktemp("redis-tls"), port=port,
        extra_args=["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                    "--tls-auth-clients", "no", "--requirepass", TLS_PASSWORD],
        client_kwargs={"password": TLS_PASSWORD, "ssl": True, "ssl_ca_certs": str(ca)})
    with running(server):
        where = f"127.0.0.1:{port}/0"
        tls = f"ssl_ca_certs={quote(str(ca))}&ssl_cert_reqs=required"
        yield Secured(server, f"rediss://:{TLS_PASSWORD}@{where}?{tls}",
                      {"wrong password": f"rediss://:{WRONG}@{where}?{tls}"},
                      (TLS_PASSWORD, WRONG))


@pytest.fixture(params=["requirepass_redis", "acl_redis", "tls_redis"])
def secured(request) -> Secured:
    """Each configuration in turn, emptied, its ACL LOG (denials, failed AUTHs) too."""
    config = request.getfixturevalue(request.param)
    with config.server.client() as client:
        client.flushall()
        client.acl_log_reset()
    return config


def use_redis(settings, url: str, **bgtasks) -> None:
    """Point every setting that names Redis (BGTASKS, CACHES, REDIS_URL) at `url`."""
    for name, value in _redis_settings(url).items():
        setattr(settings, name, value)
    settings.BGTASKS = {**settings.BGTASKS, **bgtasks}


def failed_enqueue(secured: Secured, settings, url: str) -> tuple[str, float]:
    """Enqueue through `url`, which must fail: (the EnqueueError's text, seconds taken)."""
    use_redis(settings, url)
    started = time.monotonic()
    with pytest.raises(EnqueueError) as caught:
        record.enqueue("never runs")
    elapsed = time.monotonic() - started
    # What a log handler or an error page would print: the whole chain of causes.
    secured.assert_no_secret("".join(traceback.format_exception(caught.value)))
    return str(caught.value), elapsed


# -- the right credentials ---------------------------------------------------------------


def test_enqueue_and_a_real_worker_run_a_task(secured, settings, redis_server, start_worker):
    use_redis(settings, secured.url)
    token = f"secure-{uuid.uuid4().hex[:8]}"

    info = record.enqueue(token)

    assert info.state == "pending" and get_task_info(info.id).state == "pending"
    with secured.server.client() as client:
        assert client.zscore(KEYS.pending, info.id) is not None
    with redis_server.client() as client:
        assert client.zscore(KEYS.pending, info.id) is None  # not the session's server
    # -v 3: everything the worker may log, DEBUG included, is searched for a password
    worker = start_worker("--processes", "1", "--threads", "2", "-v", "3",
                          env={"BGTASKS_REDIS_URL": secured.url})
    with secured.server.client() as client:
        wait_until(lambda: token in recording.ran(client), timeout=15,
                   message=f"the worker ran {token}")
        wait_until(lambda: client.zscore(KEYS.pending, info.id) is None, timeout=5)
        # Nothing was refused: for the ACL user, no command, key or channel beyond its grant.
        assert client.acl_log() == []
    log = worker.wait_for_log(f"starting: Redis {secured.target},")
    assert worker.is_running()
    secured.assert_no_secret(log)
    assert "Traceback" not in log


@pytest.mark.django_db
def test_the_admin_works_and_never_shows_a_password(secured, settings):
    use_redis(settings, secured.url, ENQUEUE_ON_COMMIT=False)
    task_id = record.enqueue("shown in the admin").id
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    detail = f"{DASHBOARD}{task_id}/change/?queue=default"
    pages = {
        "/admin/": f'href="{DASHBOARD}"',
        "/admin/django_bgtasks/": f'href="{DASHBOARD}"',
        DASHBOARD: f'href="{DASHBOARD}pending/?queue=default">1</a>',
        f"{DASHBOARD}pending/?queue=default": task_id,
        detail: "shown in the admin",
    }
    for url, expected in pages.items():
        response = client.get(url)
        html = response.content.decode()
        assert response.status_code == 200, url
        assert expected in html, url
        secured.assert_no_secret(html)

    # and it writes: delete the task from its page
    response = client.post(f"{DASHBOARD}action/", {
        "action": "delete", "post": "yes", "_selected_action": f"default:{task_id}",
        "next": DASHBOARD})
    assert response.status_code == 302
    with secured.server.client() as redis_client:
        assert redis_client.hget(KEYS.msg, task_id) is None
    secured.assert_no_secret(client.get(DASHBOARD).content.decode())  # its message too


# -- wrong credentials ---------------------------------------------------------------------


def test_wrong_credentials_make_enqueue_fail_quickly_and_clearly(secured, settings):
    for what, url in secured.wrong_urls.items():
        message, elapsed = failed_enqueue(secured, settings, url)

        assert elapsed < QUICK, what
        assert f"authentication to Redis at {secured.target} failed: " in message, what
        print(f"{what}: {elapsed * 1000:.0f} ms: {message}")  # shown with -s or -rP
    with secured.server.client() as client:
        assert client.dbsize() == 0  # nothing half-written


@pytest.mark.django_db
def test_the_admin_with_a_wrong_password_says_so_without_it(secured, settings):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    for what, url in secured.wrong_urls.items():
        use_redis(settings, url)

        response = client.get(DASHBOARD)

        html = response.content.decode()
        assert response.status_code == 503, what
        assert f"authentication to Redis at {secured.target} failed" in html, what
        secured.assert_no_secret(html)


def test_a_worker_with_a_wrong_password_says_so_and_keeps_retrying(secured, start_worker):
    url = next(iter(secured.wrong_urls.values()))
    worker = start_worker("--processes", "1", "--threads", "2", "-v", "3",
                          env={"BGTASKS_REDIS_URL": url})

    failed = f"authentication to Redis at {secured.target} failed"
    log = worker.wait_for_log(failed, count=3, timeout=15)

    assert worker.is_running()  # waits for the password to be fixed, as for a Redis outage
    assert "retrying in" in log and "Traceback" not in log
    assert "starting:" not in log  # no worker process was started
    secured.assert_no_secret(log)


# -- TLS -----------------------------------------------------------------------------------


def test_a_plain_url_to_the_tls_port_fails_quickly_and_clearly(tls_redis, settings):
    port = tls_redis.server.port
    cases = {
        "redis:// to the TLS port": (f"redis://:{TLS_PASSWORD}@127.0.0.1:{port}/0",
                                     f"cannot reach Redis at redis://127.0.0.1:{port}/0: "),
        "rediss:// without our CA": (f"rediss://:{TLS_PASSWORD}@127.0.0.1:{port}/0",
                                     "certificate verify failed"),
    }
    for what, (url, expected) in cases.items():
        message, elapsed = failed_enqueue(tls_redis, settings, url)

        assert elapsed < QUICK, what
        assert expected in message, what
        print(f"{what}: {elapsed * 1000:.0f} ms: {message}")


# -- a password with an unencoded '/', '#' or '?' ------------------------------------------
# Such a character ends the URL's host part early: urllib then reads part of the password
# as the port ("Port could not be cast to integer value as '<part>'"), the path or the
# query. Every way in says the URL is malformed, and shows none of it.

MALFORMED = "BGTASKS['REDIS_URL'] is a malformed Redis URL"


def split_url(char: str) -> str:
    return f"redis://:{char.join(SPLIT_PASSWORD_HALVES)}@127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("char", "/#?")
def test_check_says_a_split_password_url_is_malformed_without_it(settings, char):
    use_redis(settings, split_url(char))
    with pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert MALFORMED in str(caught.value)
    assert_no_password_half(str(caught.value))


@pytest.mark.parametrize("char", "/#?")
def test_the_cli_says_a_split_password_url_is_malformed_without_it(settings, char):
    url = split_url(char)
    use_redis(settings, url)
    message = BgtasksCommand().error("stats")
    assert MALFORMED in message
    assert_no_password_half(message)

    env = {**os.environ, "BGTASKS_REDIS_URL": url, "BGTASKS_DEMO_DB": os.devnull}
    for skip in ((), ("--skip-checks",)):  # the system checks' error, or the command's
        proc = subprocess.run([sys.executable, str(MANAGE_PY), "bgtasks", *skip, "stats"],
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=60)
        assert proc.returncode == 1, skip
        assert MALFORMED in proc.stderr, skip
        assert "Traceback" not in proc.stderr, skip
        assert_no_password_half(proc.stdout + proc.stderr)


@pytest.mark.parametrize("char", "/#?")
def test_a_worker_says_a_split_password_url_is_malformed_and_exits(start_worker, char):
    url = split_url(char)
    for skip in ((), ("--skip-checks",)):  # a misconfiguration is not waited out
        worker = start_worker("--processes", "1", "--threads", "1", *skip,
                              env={"BGTASKS_REDIS_URL": url})
        assert worker.wait(timeout=30) != 0, skip
        log = worker.log_text()
        assert MALFORMED in log, skip
        assert "Traceback" not in log and "retrying" not in log, skip
        assert_no_password_half(log)


@pytest.mark.django_db
@pytest.mark.parametrize("char", "/#?")
def test_the_admin_says_a_split_password_url_is_malformed_without_it(settings, char):
    use_redis(settings, split_url(char))
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    response = client.get(DASHBOARD)
    html = response.content.decode()
    assert response.status_code == 503
    assert "is a malformed Redis URL" in html
    assert_no_password_half(html)
