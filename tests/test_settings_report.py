"""The effective settings, as `bgtasks settings` (and the admin's settings page) show them:
every limit with its value, nothing secret."""

from __future__ import annotations

import json
from io import StringIO

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
