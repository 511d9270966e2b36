"""The effective settings, as `bgtasks settings` (and the admin's settings page) show them:
every limit with its value, nothing secret."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command


def run(*args: str) -> str:
    out = StringIO()
    call_command("bgtasks", "settings", *args, stdout=out)
    return out.getvalue()


def test_every_setting_is_shown_with_where_it_comes_from(settings):
    settings.BGTASKS = {**settings.BGTASKS, "MAX_MESSAGE_BYTES": 65536}
    text = run()
    line = next(ln for ln in text.splitlines() if ln.startswith("MAX_MESSAGE_BYTES"))
    assert "65536" in line and line.rstrip().endswith("settings")
    dead = next(ln for ln in text.splitlines() if ln.startswith("DEAD_MAX_TASKS"))
    assert "10000" in dead and dead.rstrip().endswith("default")
    data = json.loads(run("--json"))
    assert data["MAX_MESSAGE_BYTES"] == 65536 and data["LEASE_SECONDS"] > 0


def test_no_credential_is_shown(settings):
    settings.BGTASKS = {
        **settings.BGTASKS,
        "REDIS_URL": "redis://user:Secr3tPass@127.0.0.1:6399/0",
        "SENTINEL_KWARGS": {"password": "Sentin3lPass", "socket_timeout": 1},
        "SENTINELS": ["127.0.0.1:26379", "redis://x:N0dePass@h:1"],
    }
    for text in (run(), run("--json")):
        assert "Secr3tPass" not in text and "Sentin3lPass" not in text
        assert "N0dePass" not in text
    data = json.loads(run("--json"))
    assert data["REDIS_URL"] == "redis://127.0.0.1:6399/0"
    assert data["SENTINEL_KWARGS"] == {"password": "(hidden)", "socket_timeout": 1}


def test_a_malformed_url_is_shown_as_malformed_without_any_part_of_it(settings):
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": "redis://:s3cr/et@127.0.0.1:6399/0"}
    text = run()
    assert "malformed" in text and "s3cr" not in text and "et@" not in text


SETTINGS_PAGE = "/admin/django_bgtasks/task/settings/"


def admin_client(*perms: str, superuser: bool = False):
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    name = f"user{User.objects.count()}"
    if superuser:
        user = User.objects.create_superuser(name, f"{name}@example.com", None)
    else:
        user = User.objects.create_user(name, is_staff=True)
        user.user_permissions.set(Permission.objects.filter(
            content_type__app_label="django_bgtasks", codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_admin_settings_page_shows_every_limit_and_no_secret(settings):
    settings.BGTASKS = {**settings.BGTASKS, "MAX_MESSAGE_BYTES": 65536,
                        "REDIS_URL": settings.BGTASKS["REDIS_URL"].replace(
                            "redis://", "redis://user:Secr3tPass@")}
    response = admin_client(superuser=True).get(SETTINGS_PAGE)
    assert response.status_code == 200
    text = response.content.decode()
    assert "MAX_MESSAGE_BYTES" in text and "65536" in text and "BULK_BATCH" in text
    assert "Secr3tPass" not in text


@pytest.mark.django_db
def test_the_settings_page_needs_the_task_view_permission():
    viewer = admin_client("view_task")
    assert SETTINGS_PAGE in viewer.get("/admin/django_bgtasks/task/").content.decode()
    assert viewer.get(SETTINGS_PAGE).status_code == 200
    assert admin_client().get(SETTINGS_PAGE).status_code == 403
