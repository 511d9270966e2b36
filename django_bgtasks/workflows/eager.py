"""EAGER workflows: every member runs inline, in order, as enqueue() runs tasks under
EAGER; a failure stops the workflow and propagates, as it does for a single task."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..message import TaskMessage
from .canvas import Plan
from .info import WorkflowInfo


def run_eagerly(plan: Plan, workflow_id: str, messages: list[TaskMessage]) -> WorkflowInfo:
    previous: Any = None
    succeeded: list[str] = []
    for number, (first, count, is_group) in enumerate(plan.steps):
        results = []
        for index in range(first, first + count):
            msg = messages[index]
            if number > 0:
                msg = dataclasses.replace(msg, args=[previous, *msg.args])
            results.append(plan.calls[index].task._run_eagerly(msg).result)
            succeeded.append(msg.id)
        previous = results if is_group or count > 1 else results[0]
    if plan.fin >= 0:
        msg = messages[plan.fin]
        summary = {"succeeded": succeeded, "failed": []}
        plan.calls[plan.fin].task._run_eagerly(
            dataclasses.replace(msg, args=[summary, *msg.args]))
    planned = WorkflowInfo.planned(workflow_id, plan)
    return dataclasses.replace(planned, state="succeeded",
                               counts={"completed": len(plan.calls)})
