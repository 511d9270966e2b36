"""``manage.py runbackground``: run the background-task worker."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_bgtasks.broker.types import Retention
from django_bgtasks.conf import get_settings
from django_bgtasks.exceptions import InvalidRedisSetting
from django_bgtasks.worker.config import WorkerConfig, parse_queues
from django_bgtasks.worker.reload import ReloadingParent, is_reloaded_child
from django_bgtasks.worker.supervisor import Supervisor

FAILED_EXIT = 1  # --burst --fail-on-error: a task attempt of this run failed


class Command(BaseCommand):
    help = "Run the django-bgtasks worker: processes x threads executing queued tasks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queues", help="Queues to serve, with weights: 'default,mail:3'. "
                            "Default: BGTASKS['QUEUES'].")
        parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                            help="Worker processes (default: the CPU count).")
        parser.add_argument("--threads", type=int, default=8,
                            help="Threads per process (default: 8).")
        parser.add_argument("--shutdown-timeout", type=float, default=10.0,
                            help="Seconds running tasks get to finish on SIGTERM/SIGINT before "
                                 "they go back to their queue (default: 10).")
        parser.add_argument("--max-tasks-per-child", type=int, default=0,
                            help="Replace a worker process after it ran this many tasks "
                                 "(default: 0, never).")
        parser.add_argument("--no-cron", action="store_true",
                            help="Do not fire periodic tasks from this host (every host "
                                 "fires them by default; each tick runs once either way).")
        parser.add_argument("--burst", action="store_true",
                            help="Run what is due now (pending tasks, due scheduled and retry "
                                 "tasks, and what they enqueue that is due), then exit 0.")
        parser.add_argument("--fail-on-error", action="store_true",
                            help="With --burst: exit with code 1 if a task attempt of this run "
                                 "failed (retried or dead).")
        parser.add_argument("--reload", action="store_true",
                            help="Restart the worker when Python files change (development); "
                                 "running tasks finish first, as on SIGTERM.")

    def handle(self, *args: Any, **options: Any) -> None:
        cfg = get_settings()
        if cfg.CAPTURE:  # what its tasks enqueue would be recorded in memory, and lost
            raise CommandError("BGTASKS['CAPTURE'] is on (a test setting): the worker would "
                               "record the tasks its tasks enqueue instead of writing them")
        try:
            queues = parse_queues(options["queues"]) if options["queues"] else dict(cfg.QUEUES)
        except ValueError as exc:
            raise CommandError(f"--queues: {exc}") from None
        for name in ("processes", "threads"):
            if options[name] < 1:
                raise CommandError(f"--{name} must be at least 1")
        if options["max_tasks_per_child"] < 0 or options["shutdown_timeout"] < 0:
            raise CommandError("--max-tasks-per-child and --shutdown-timeout must be >= 0")
        check_modes(options)
        verbosity = options["verbosity"]
        configure_logging(verbosity)
        config = WorkerConfig(
            queues=queues, processes=options["processes"], threads=options["threads"],
            shutdown_timeout=options["shutdown_timeout"],
            max_tasks_per_child=options["max_tasks_per_child"],
            strict_priority=cfg.STRICT_PRIORITY, lease_seconds=float(cfg.LEASE_SECONDS),
            dead_max_tasks=cfg.DEAD_MAX_TASKS, dead_max_age=float(cfg.DEAD_MAX_AGE),
            cancelled=Retention(cfg.CANCELLED_MAX_TASKS, int(cfg.CANCELLED_MAX_AGE * 1000)),
            expired=Retention(cfg.EXPIRED_MAX_TASKS, int(cfg.EXPIRED_MAX_AGE * 1000)),
            log_arguments=verbosity >= 2, cron=not options["no_cron"],
            bulk_batch=cfg.BULK_BATCH, burst=options["burst"],
            cancel_grace=float(cfg.CANCEL_GRACE),
        )
        if options["reload"] and not is_reloaded_child():
            code = ReloadingParent(config.shutdown_timeout).run()
            if code:
                sys.exit(code)
            return
        # The child of a --reload parent stops if that parent dies.
        supervisor = Supervisor(config, parent_pid=os.getppid() if options["reload"] else None)
        try:
            code = supervisor.run()
        except InvalidRedisSetting as exc:  # with --skip-checks: what check E003 says
            raise CommandError(str(exc)) from None
        summary = supervisor.summary()
        if summary is not None:
            self.stderr.write(summary.line())
            if options["fail_on_error"] and summary.failed and not code:
                code = FAILED_EXIT
        if code:
            sys.exit(code)


def check_modes(options: dict[str, Any]) -> None:
    """Refuse the combinations of --burst, --fail-on-error and --reload that mean nothing."""
    if options["reload"] and options["burst"]:
        raise CommandError("--reload and --burst cannot be combined: a burst exits once "
                           "nothing is due, there is nothing to reload")
    if options["fail_on_error"] and not options["burst"]:
        raise CommandError("--fail-on-error needs --burst (a worker that does not exit has "
                           "no exit code to give)")


def configure_logging(verbosity: int) -> None:
    """Log to stderr unless the project's LOGGING already routes our messages somewhere.

    A level the project set for "django_bgtasks" wins unless -v asks for another.
    """
    logger = logging.getLogger("django_bgtasks")
    if verbosity != 1 or logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING if verbosity == 0 else
                        logging.DEBUG if verbosity >= 3 else logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(process)d] %(message)s"))
        logger.addHandler(handler)
