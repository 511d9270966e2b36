"""bench/bench_settings.py plus the task of bench/workflows.py; its chord hands on more
results than the default BGTASKS['WORKFLOW_MAX_RESULTS'] (10,000)."""

from bench_settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "benchworkflows"]  # noqa: F405
BGTASKS = {**BGTASKS, "WORKFLOW_MAX_RESULTS": 1_000_000}  # noqa: F405
