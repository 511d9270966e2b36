"""``runbackground --reload``: restart the worker when a Python file changes, draining it
first.

Built on ``django.utils.autoreload``: its watchers (``get_reloader()``: StatReloader, or
Watchman when installed), the files they watch (every loaded module, plus what
``autoreload_started`` receivers add), its decision that a change needs a restart
(``trigger_reload``: exit code 3, what runserver's parent understands) and its way of
starting the command again (``get_child_arguments()`` with ``RUN_MAIN=true``). The roles
are arranged differently from ``run_with_reloader``, which runs the command in a daemon
thread of its child (where the supervisor could neither install its signal handlers nor
fork safely), ends that child the moment a file changes (nothing drains), and answers
SIGTERM by exiting at once, killing the child with SIGKILL (its worker processes would
run on as orphans). Here:

- this process, the one the user started and signals, watches the files and runs the
  worker as a child (the same command line with ``RUN_MAIN=true``);
- on a change it sends the child SIGTERM (running tasks finish within
  ``--shutdown-timeout`` or go back to their queue, as on any SIGTERM), waits for it, and
  starts a new child, which imports the new code;
- SIGTERM and SIGINT are passed on to the child, once each (a second one stops it at
  once, as usual), and this process exits with the child's exit code.

The child runs in a process group of its own, so that a Ctrl-C (the terminal signals its
whole foreground group) reaches it once, passed on, not twice (a second signal means
"stop at once"). A child whose parent died stops by itself (``Supervisor.parent_pid``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Any

from django.utils import autoreload

logger = logging.getLogger("django_bgtasks.worker")

RELOAD_EXIT = 3  # autoreload.trigger_reload()'s exit code: "a file changed"


def is_reloaded_child() -> bool:
    """True in the worker process that a ``--reload`` parent started."""
    return os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true"


class ReloadingParent:
    """Watches the project's files and runs (and re-runs) the worker as a child process."""

    def __init__(self, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self._child: subprocess.Popen | None = None
        self._signals = 0  # stop signals this process received
        self._child_signals = 0  # stop signals the current child was sent
        self._changed: str | None = None

    def run(self) -> int:
        """Run the worker until a stop signal; returns the worker's last exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        watcher = autoreload.get_reloader()
        autoreload.file_changed.connect(self._note_change, weak=False)
        autoreload.autoreload_started.send(sender=watcher)  # as BaseReloader.run() does
        logger.info("watching for file changes with %s", type(watcher).__name__)
        self._start_child()
        ticks = watcher.tick()
        waiting = False  # the child ended by itself: wait for a change to start another
        while True:
            code = self._child.poll() if self._child else None
            if code is not None and self._signals:
                return code
            if code is not None and not waiting:
                logger.error("the worker exited (code %d); it starts again when a file "
                             "changes", code)
                waiting = True
            try:
                next(ticks)  # one pass over the files (StatReloader: then sleeps 1 s)
            except SystemExit as exc:  # trigger_reload(): a change that needs a restart
                if exc.code != RELOAD_EXIT:
                    raise
                ticks = watcher.tick()
                if not self._signals:
                    self._restart()
                    waiting = False

    def _note_change(self, sender: Any, file_path: Any, **kwargs: Any) -> None:
        self._changed = str(file_path)  # returns None: autoreload decides on a restart

    def _start_child(self) -> None:
        env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
        self._child_signals = 0
        self._child = subprocess.Popen(autoreload.get_child_arguments(), env=env,
                                       close_fds=False, process_group=0)
        logger.debug("started the worker: pid %d", self._child.pid)
        while self._child_signals < self._signals:  # a signal came before it existed
            if not self._send(signal.SIGTERM):
                break

    def _restart(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            logger.info("%s changed: restarting the worker (running tasks get up to %gs "
                        "to finish)", self._changed or "a file", self.shutdown_timeout)
            self._send(signal.SIGTERM)
            child.wait()  # a stop signal meanwhile is passed on by _on_signal
        else:
            logger.info("%s changed: starting the worker", self._changed or "a file")
        if not self._signals:
            self._start_child()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        # A child draining for a restart already had its first signal: only a second
        # one from the user (stop at once) is passed on.
        while self._child_signals < self._signals:
            if not self._send(signum):
                break

    def _send(self, signum: int) -> bool:
        child = self._child
        if child is None or child.poll() is not None:
            return False
        self._child_signals += 1
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            return False
        return True
