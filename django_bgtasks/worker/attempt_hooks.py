"""The worker's side of BGTASKS['HOOKS']: an attempt run inside its hooks' blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from types import MappingProxyType

from ..broker.types import Ack, ClaimedTask
from ..context import NO_HEADERS
from ..exceptions import HookError
from ..hooks import AttemptInfo, Guarded, TaskHook, hook_name
from ..message import TaskMessage

# An Ack's outcome as the hooks are told it (hooks.OUTCOMES).
OUTCOME_NAMES = {"done": "succeeded", "retry": "retried", "dead": "dead",
                 "cancelled": "cancelled"}


def attempt_info(claimed: ClaimedTask, msg: TaskMessage, worker_id: str) -> AttemptInfo:
    """What the hooks of this attempt are told before it runs."""
    headers = MappingProxyType(msg.headers) if msg.headers else NO_HEADERS
    return AttemptInfo(msg.id, msg.name, msg.queue, claimed.attempt, msg.max_retries,
                       worker_id, headers)


def run_hooked(hooks: Sequence[TaskHook], run: AttemptInfo,
               body: Callable[[AttemptInfo], Ack],
               fail: Callable[[BaseException], Ack]) -> Ack:
    """``body`` (the attempt: never raises, notes what the task raised in ``run``) inside
    each hook's block, the first outermost. A hook that raises as its block starts fails
    the attempt (``fail``: retried or dead by the task's policy) without running it: the
    task may depend on what the hook sets up. The outcome goes into ``run`` before the
    blocks end."""
    with ExitStack() as stack:
        try:
            for hook in hooks:
                stack.enter_context(Guarded(hook, hook.attempt(run)))
        except Exception as exc:  # noqa: BLE001  (the task's attempt fails, readably)
            error = HookError(f"hook {hook_name(hook)} raised before the attempt: "
                              f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            run.exception = error
            ack = fail(error)
        else:
            ack = body(run)
        run.outcome = OUTCOME_NAMES.get(ack.outcome, ack.outcome)
    return ack
