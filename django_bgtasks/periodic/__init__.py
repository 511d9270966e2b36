"""Periodic tasks: the entries declared in BGTASKS["PERIODIC"] or with @periodic_task
(declared.py), their schedules (schedules.py), and what the admin and the command line show
of them (status.py). The worker's scheduler is worker/periodic.py. Stored keys still say
"cron" (``{q}:cron``, ``{q}:cron-history:...``: see broker/keys.py): renaming them would
orphan what is stored."""

from .declared import MAX_CATCH_UP, PeriodicEntry, entries, periodic_task

__all__ = ["MAX_CATCH_UP", "PeriodicEntry", "entries", "periodic_task"]
