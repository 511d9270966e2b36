"""Minimal Django settings for the benchmarks (no database work, no admin)."""

import os

SECRET_KEY = "bench-only"
USE_TZ = True
INSTALLED_APPS = ["django_bgtasks", "benchapp"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
BGTASKS = {"REDIS_URL": os.environ.get("BGTASKS_REDIS_URL", "redis://127.0.0.1:6399/0")}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Per-task INFO lines would measure the terminal, not the queue.
    "loggers": {"django_bgtasks": {"level": os.environ.get("BENCH_LOG_LEVEL", "WARNING")}},
}
