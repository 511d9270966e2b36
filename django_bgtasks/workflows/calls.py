"""A task call not yet enqueued (``task.s(...)``): the unit workflows are built from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..message import validate_arguments

if TYPE_CHECKING:
    from ..info import TaskInfo
    from ..task import BackgroundTask


@dataclass(frozen=True)
class TaskCall:
    """``task`` with its arguments, checked for JSON when made. In a chain, the previous
    step's result is added as the first positional argument when the call runs."""

    task: BackgroundTask
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, task: BackgroundTask, args: Sequence[Any], kwargs: Mapping[str, Any],
             ) -> TaskCall:
        validate_arguments(task.name, args, kwargs)
        return cls(task, tuple(args), dict(kwargs))

    def using(self, **options: Any) -> TaskCall:
        """The same call with other task options (queue_name, priority, run_after, ...)."""
        return TaskCall(self.task.using(**options), self.args, self.kwargs)

    def enqueue(self) -> TaskInfo:
        """Enqueue this call alone, as ``task.enqueue(*args, **kwargs)`` would."""
        return self.task.enqueue(*self.args, **self.kwargs)

    @property
    def label(self) -> str:
        return self.task.name.rsplit(".", 1)[-1]
