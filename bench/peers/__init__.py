"""One small module per system under benchmark (``<name>_app.py``), and the work they share.

Each app module defines two tasks with that system's own decorator, ``incr(i)`` (one INCR
on ``bench:counter``) and ``stamp(kind, ref)`` (records its start time for the latency
figures), and the producer side with that system's natural API: ``send(i)``,
``send_stamp(kind, ref)`` and ``send_due(due, delay)``. Logging is at WARNING everywhere:
per-task log lines would measure the terminal, not the queue.
"""
