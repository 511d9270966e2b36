"""Settings for the django-bgtasks test suite and demo. Not for production.

Environment:
    BGTASKS_REDIS_URL       Redis for the tasks and the cache (the tests and scripts/demo set it);
                            a redis+cluster:// URL for a cluster
    BGTASKS_TEST_CACHE_URL  Redis for the cache, if not BGTASKS_REDIS_URL (django-redis has no
                            cluster client: the tests' cluster topology sets it)
    BGTASKS_DEMO_DB         sqlite file (default: testproject/db.sqlite3)
    BGTASKS_LEASE_SECONDS   BGTASKS["LEASE_SECONDS"] (tests shorten it)
    BGTASKS_BULK_BATCH      BGTASKS["BULK_BATCH"] (tests slow bulk jobs down with small batches)
    BGTASKS_TEST_PERIODIC   periodic entries for the tests' workers (TEST_PERIODIC_ENTRIES)
    BGTASKS_DEMO_PERIODIC   the demo's periodic entries (scripts/demo sets it)
    BGTASKS_TEST_SPANS      a file: the worker traces with OpenTelemetry (demo.hooks.FileTracing)
                            and writes its spans there, a JSON line each
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-insecure-bgtasks-testproject-dev-key-do-not-use-in-production"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_bgtasks",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BGTASKS_DEMO_DB") or BASE_DIR / "db.sqlite3",
    }
}

AUTH_PASSWORD_VALIDATORS = []  # the demo's admin/admin

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Port 6399, not 6379: nothing here should ever talk to a system Redis by accident.
REDIS_URL = os.environ.get("BGTASKS_REDIS_URL", "redis://127.0.0.1:6399/0")

# Where the test tasks record their side effects (demo.recording): REDIS_URL unless a test
# keeps its ledger apart, so that stopping the task queue's Redis leaves it readable.
BGTASKS_TEST_LEDGER_URL = os.environ.get("BGTASKS_TEST_LEDGER_URL")

BGTASKS = {
    "REDIS_URL": REDIS_URL,
    "QUEUES": {"default": 1, "mail": 2},
    "LEASE_SECONDS": float(os.environ.get("BGTASKS_LEASE_SECONDS", "30")),
    "SOCKET_TIMEOUT": float(os.environ.get("BGTASKS_SOCKET_TIMEOUT", "10")),
    "BULK_BATCH": int(os.environ.get("BGTASKS_BULK_BATCH", "500")),
    "CANCEL_GRACE": float(os.environ.get("BGTASKS_CANCEL_GRACE", "10")),
    # a named limit, shared by the tasks that name it (demo.tasks.api_call)
    "LIMITS": {"demo-api": {"concurrency": 2, "rate": "20/s"}},
}
if os.environ.get("BGTASKS_TEST_SPANS"):
    BGTASKS["HOOKS"] = ["demo.hooks.FileTracing"]
# Periodic entries for the tests' workers only: BGTASKS_TEST_PERIODIC names the entries
# to declare, comma-separated ("1" means every-second).
TEST_PERIODIC_ENTRIES = {
    "every-second": {"task": "demo.tasks.record_redis_time", "every": 1, "args": ["tick"]},
    # catch_up "all": a tick missed while Redis restarts still runs, late
    "soak": {"task": "demo.tasks.record_tick", "every": 1, "args": ["soak"], "catch_up": "all"},
    "latest-2s": {"task": "demo.tasks.record_tick", "every": 2, "args": ["latest-2s"]},
    "all-2s": {"task": "demo.tasks.record_tick", "every": 2, "args": ["all-2s"],
               "catch_up": "all"},
    "skip-2s": {"task": "demo.tasks.record_tick", "every": 2, "args": ["skip-2s"],
                "catch_up": "skip"},
    "all-late-2s": {"task": "demo.tasks.record_tick", "every": 2, "args": ["all-late-2s"],
                    "catch_up": "all", "max_lateness": 5},
    "overlap-skip": {"task": "demo.tasks.slow_tick", "every": 1,
                     "args": ["overlap-skip", 3], "overlap": "skip"},
    "async-every-second": {"task": "demo.tasks.async_record_tick", "every": 1,
                           "args": ["async"]},
}
_test_periodic = os.environ.get("BGTASKS_TEST_PERIODIC", "")
if _test_periodic:
    BGTASKS["PERIODIC"] = [
        {"name": name, **TEST_PERIODIC_ENTRIES[name]}
        for name in ("every-second" if _test_periodic == "1" else _test_periodic).split(",")]
elif os.environ.get("BGTASKS_DEMO_PERIODIC"):  # scripts/demo: entries to look at
    BGTASKS["PERIODIC"] = [
        {"name": "demo-heartbeat", "task": "demo.tasks.reminder", "every": 15,
         "args": ["periodic heartbeat (every 15 s)"]},
        {"name": "nightly-report", "task": "demo.tasks.reminder", "cron": "30 2 * * *",
         "tz": "Europe/Paris", "args": ["nightly report (02:30 Paris time)"]},
    ]

if django.VERSION >= (6, 0):
    # Django's Tasks framework on our worker (demo.django_tasks), and another backend for
    # the tests of tasks the worker must refuse.
    TASKS = {
        "default": {
            "BACKEND": "django_bgtasks.backends.BackgroundTaskBackend",
            "QUEUES": ["default", "mail"],
            # quick retries, so that the tests see a failing task reach the dead queue
            "OPTIONS": {"max_retries": 2, "retry_backoff": lambda attempt: 0.2},
        },
        "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    }

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("BGTASKS_TEST_CACHE_URL") or REDIS_URL,
        # bounded waits when Redis stops answering (system check bgtasks.W003)
        "OPTIONS": {"SOCKET_TIMEOUT": 10, "SOCKET_CONNECT_TIMEOUT": 5},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {"format": "%(asctime)s %(levelname)s [pid %(process)d] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console"},
    },
    # These propagate (the root logger has no handler) so pytest's caplog sees them too.
    "loggers": {
        "django_bgtasks": {"handlers": ["console"], "level": "INFO"},
        "demo": {"handlers": ["console"], "level": "INFO"},
    },
}

# tests/failover/test_failover_sentinel.py: the tasks behind Sentinel (the cache and the ledger stay
# on a plain Redis, so that the verdict survives the failover).
#   BGTASKS_TEST_SENTINELS     "host:port,host:port,...": BGTASKS SENTINELS
#   BGTASKS_TEST_MASTER_NAME   the master they monitor (default "mymaster")
if os.environ.get("BGTASKS_TEST_SENTINELS"):
    BGTASKS["SENTINELS"] = os.environ["BGTASKS_TEST_SENTINELS"].split(",")
    BGTASKS["MASTER_NAME"] = os.environ.get("BGTASKS_TEST_MASTER_NAME", "mymaster")
    BGTASKS["REDIS_URL"] = f"redis://{BGTASKS['MASTER_NAME']}/0"
