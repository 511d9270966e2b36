"""bench/bench_settings.py plus the flow-control tasks of bench/limits.py."""

from bench_settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "benchlimits"]  # noqa: F405
