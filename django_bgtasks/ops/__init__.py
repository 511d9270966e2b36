"""The read side, shared by the admin and the ``bgtasks`` command: the inspector (lists,
counts, workers, bulk jobs, "run now" and "delete"; its own pipelines, like the broker),
what a list shows of a task (summary.py), how the live limits read (limit_rows.py), how
times, sizes and arguments are shown (display.py), and the effective settings
(settings.py)."""
