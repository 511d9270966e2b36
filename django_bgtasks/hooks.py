"""Hooks around every enqueue and every attempt (``BGTASKS["HOOKS"]``, docs/tracing.md).

A hook is a class, named by its dotted path in the settings (never read from Redis), made
once per process with no arguments. Its two methods each return a context manager:
``enqueue`` wraps the write of one task in the producer, and may add headers to its
message; ``attempt`` wraps one attempt in the worker, and reads them. Hooks nest as
middleware does: the first listed is the outermost, each wraps the next.

Errors: a hook that raises when its block starts stops what it wraps (at enqueue, the
error propagates and nothing is written; in the worker, the attempt fails as if the task
had raised, with ``HookError``). An error when a block ends is logged: the task is written,
or its outcome decided, by then. A hook never swallows an exception it wraps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal

from django.utils.module_loading import import_string

from .conf import Settings, get_settings
from .message import TaskMessage, validate_headers

logger = logging.getLogger("django_bgtasks")

# What an attempt's hooks learn when it ended (AttemptInfo.outcome).
OUTCOMES = ("succeeded", "retried", "dead", "cancelled")


@dataclass(frozen=True)
class EnqueueInfo:
    """The task an ``enqueue`` hook wraps the write of."""

    id: str
    name: str
    queue_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    workflow: str | None  # the workflow it is a member of, if any


@dataclass
class AttemptInfo:
    """The attempt an ``attempt`` hook wraps. ``outcome`` (one of OUTCOMES) and
    ``exception`` (what the task, or a hook, raised; None on success) are set before the
    hooks' blocks end."""

    id: str
    name: str
    queue_name: str
    attempt: int  # 1 for the first
    max_retries: int
    worker_id: str
    headers: Mapping[str, str]  # read-only
    outcome: str | None = None
    exception: BaseException | None = None


class TaskHook:
    """Base class of hooks: override either method (both do nothing here)."""

    def enqueue(self, task: EnqueueInfo, headers: dict[str, str],
                ) -> AbstractContextManager[object]:
        """A block around the write of ``task``, entered before its message is encoded:
        what it adds to ``headers`` (str -> str) is written with the message. It ends once
        the write is done (or refused), or when enqueue() returns if the write waits for
        a transaction's commit."""
        return nullcontext()

    def attempt(self, run: AttemptInfo) -> AbstractContextManager[object]:
        """A block around one attempt of a task, in the thread that runs it."""
        return nullcontext()


def hook_problems(paths: Any) -> list[str]:
    """Why ``paths`` (BGTASKS['HOOKS']) cannot be loaded: one line per problem."""
    if not isinstance(paths, (list, tuple)):
        return [f"must be a list of dotted paths to hook classes, not {type(paths).__name__}"]
    problems = []
    for path in paths:
        if not isinstance(path, str):
            problems.append(f"{path!r} is not a dotted path (a str)")
            continue
        try:
            found = import_string(path)
        except ImportError as exc:
            problems.append(f"{path!r} cannot be imported: {exc}")
            continue
        if not isinstance(found, type):
            problems.append(f"{path!r} is not a class")
        elif not all(callable(getattr(found, name, None)) for name in ("enqueue", "attempt")):
            problems.append(f"{path!r} has no enqueue() and attempt() methods (subclass "
                            f"django_bgtasks.hooks.TaskHook)")
    return problems


_loaded: tuple[Settings | None, tuple[TaskHook, ...]] = (None, ())


def configured_hooks() -> tuple[TaskHook, ...]:
    """The hooks of BGTASKS['HOOKS'], made once per settings (and again after a change)."""
    global _loaded
    cfg = get_settings()  # cached: a new object only after a settings change
    if _loaded[0] is not cfg:
        _loaded = (cfg, tuple(import_string(path)() for path in cfg.HOOKS))
    return _loaded[1]


def hook_name(hook: object) -> str:
    kind = type(hook)
    return f"{kind.__module__}.{kind.__qualname__}"


class Guarded:
    """One hook's block: an error at its end is logged (what it wrapped is done), and the
    exception it wraps is never swallowed, whatever its __exit__ returns."""

    __slots__ = ("_block", "_hook")

    def __init__(self, hook: TaskHook, block: AbstractContextManager[object]) -> None:
        self._hook = hook
        self._block = block

    def __enter__(self) -> object:
        return self._block.__enter__()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        try:
            self._block.__exit__(kind, value, tb)
        except Exception as exc:  # noqa: BLE001  (logged: the task's fate is decided)
            if exc is not value:
                logger.error("hook %s raised as its block ended; ignored", hook_name(self._hook),
                             exc_info=exc)
        return False


@contextmanager
def around_enqueue(hooks: Sequence[TaskHook], messages: list[TaskMessage],
                   ) -> Iterator[list[TaskMessage]]:
    """Enter every hook's ``enqueue`` block for each message (message by message, hooks in
    order); give the messages with the headers they added, checked; leave the blocks when
    the caller's block (the write) is over."""
    with ExitStack() as stack:
        out = []
        for msg in messages:
            headers = dict(msg.headers) if msg.headers else {}
            task = EnqueueInfo(msg.id, msg.name, msg.queue, msg.args, msg.kwargs, msg.workflow)
            for hook in hooks:
                stack.enter_context(Guarded(hook, hook.enqueue(task, headers)))
            if headers != (msg.headers or {}):
                msg = replace(msg, headers=validate_headers(msg.name, headers) or None)
            out.append(msg)
        yield out
