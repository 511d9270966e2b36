"""The pytest plugin (django_bgtasks.testing.pytest_plugin), in a pytest of its own: its
fixture in a Django project, and nothing done in a project without Django settings (nor
pytest-django)."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import REPO_ROOT

PLUGIN = "django_bgtasks.testing.pytest_plugin"


def run_pytest(tmp_path: Path, test_code: str, *options: str,
               settings: str | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "test_it.py").write_text(textwrap.dedent(test_code))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           # only the plugins named here, whatever this environment has installed
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if settings:
        env["DJANGO_SETTINGS_MODULE"] = settings
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", PLUGIN,
         *options, "test_it.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_the_fixture_captures_and_the_setting_capture_is_emptied_between_tests(tmp_path):
    result = run_pytest(tmp_path, """
        from django.test import override_settings
        from django.conf import settings

        from demo.tasks import add
        from django_bgtasks.testing import assert_enqueued, captured, enqueued_count

        def test_fixture(bgtasks_capture):
            add.enqueue(2, 3)
            assert_enqueued(add, 2, 3)
            [info] = bgtasks_capture.run()
            assert info.result == 5

        def test_setting_first():
            with override_settings(BGTASKS={**settings.BGTASKS, "CAPTURE": True}):
                add.enqueue(1, 1)
                assert enqueued_count(add) == 1

        def test_setting_then():
            with override_settings(BGTASKS={**settings.BGTASKS, "CAPTURE": True}):
                assert captured() == []
        """, "-p", "pytest_django.plugin", settings="testproject.settings")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_a_project_without_django_settings_is_not_touched(tmp_path):
    result = run_pytest(tmp_path, """
        from django.conf import settings

        def test_plain():
            assert not settings.configured  # nothing read them (it would have raised)
        """, "-p", "no:django")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_plugin_is_declared_to_pytest():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    points = config["options.entry_points"]["pytest11"].strip().splitlines()
    assert points == [f"django_bgtasks = {PLUGIN}"]
