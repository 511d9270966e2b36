"""Actions: POST only, CSRF-checked, each behind the model's change or delete permission,
each recorded as an admin LogEntry. Selected tasks and whole states go through the
admin's usual confirmation page first; pause and resume act at once. A whole state is
not moved by the request: it queues a bulk job that a worker runs (broker/bulk.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib import messages
from django.contrib.admin.models import CHANGE, DELETION
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import ngettext

from ..broker.keys import CANCELLABLE, DELETABLE, RUNNABLE
from ..broker.types import CancelResult
from ..info import TaskInfo
from ..models import Task
from ..ops.inspect import Inspector
from .common import (
    TEMPLATES,
    admin_page,
    back_url,
    inspector,
    log_change,
    page_context,
    queue_param,
    served_queues,
    url,
)

if TYPE_CHECKING:
    from ..admin import TaskAdmin

SELECTED = "_selected_action"  # the admin's own name for the checked rows
MAX_SELECTED = 1000  # more than a page holds; bounds the (summary) reads below


@dataclass(frozen=True)
class Action:
    permission: str  # 'change' or 'delete'
    scope: str  # 'selected' tasks, 'all' tasks of a queue's state, or the 'queue' itself
    question: str  # for the confirmation page, "{}" being what is affected
    states: tuple[str, ...] = ()  # for scope 'all': the states it applies to


ACTIONS = {
    "requeue": Action("change", "selected", "run {} now"),
    "delete": Action("delete", "selected", "delete {}"),
    "cancel": Action("change", "selected", "cancel {}"),
    "requeue_all": Action("change", "all", "run {} now", RUNNABLE),
    "delete_all": Action("delete", "all", "delete {}", DELETABLE),
    "cancel_all": Action("change", "all", "cancel {}", CANCELLABLE),
    "pause": Action("change", "queue", ""),
    "resume": Action("change", "queue", ""),
}


@admin_page
def task_action(model_admin: TaskAdmin, request: HttpRequest) -> HttpResponse:
    """Dispatch one action posted by the dashboard, a list or a detail page."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    name = request.POST.get("action", "")
    action = ACTIONS.get(name)
    if action is None:
        raise BadRequest(f"unknown action {name!r}")
    allowed = (model_admin.has_change_permission(request) if action.permission == "change"
               else model_admin.has_delete_permission(request))
    if not allowed:
        raise PermissionDenied
    back = back_url(model_admin, request)
    insp = inspector()
    if action.scope == "queue":
        return _pause(request, insp, name, back)
    if action.scope == "all":
        return _all(model_admin, request, insp, name, action, back)
    return _selected(model_admin, request, insp, name, action, back)


def _pause(request: HttpRequest, insp: Inspector, name: str, back: str) -> HttpResponse:
    queue = queue_param(request.POST, required=True)
    if name == "pause":
        insp.pause(queue)
        messages.success(request, f"Queue {queue} paused: workers take none of its tasks "
                                  f"until it is resumed.")
    else:
        insp.resume(queue)
        messages.success(request, f"Queue {queue} resumed.")
    log_change(request, [_queue_object(queue)], CHANGE, f"{name.capitalize()}d queue {queue}")
    return redirect(back)


def _all(model_admin: TaskAdmin, request: HttpRequest, insp: Inspector, name: str,
         action: Action, back: str) -> HttpResponse:
    queue = queue_param(request.POST, required=True)
    state = _state(request, action)
    if request.POST.get("post") != "yes":
        count = insp.state_counts([queue], state)[0]
        return _confirm(model_admin, request, action, back, count=count, queue=queue,
                        state=state, description=f"every {state} task of queue {queue}")
    queued = insp.queue_bulk_job(queue, state, name.removesuffix("_all"),
                                 request.user.get_username())
    job, jobs_url = queued.job, url(model_admin, "changelist") + "#bulk-jobs"
    if job is None:
        messages.info(request, f"Queue {queue} has no {state} task: nothing to do.")
        return redirect(back)
    if queued.outcome == "exists":
        messages.warning(request, f"Already {job.status}: {job.describe()} ({job.done:,} of "
                                  f"{job.total:,} done). Nothing new was queued; its progress "
                                  f"is under Bulk jobs.")
        return redirect(jobs_url)
    # Logged as it is queued: the request is what the admin's history records.
    log_change(request, [_queue_object(queue)], CHANGE, f"Queued: {job.describe()} "
                                                        f"(bulk job {job.id})")
    messages.success(request, f"Queued: {job.describe()}. A worker runs it in batches; its "
                              f"progress is under Bulk jobs.")
    if queue not in served_queues(insp.workers()):
        messages.warning(request, f"No running worker serves queue {queue}: the job waits "
                                  f"until one does.")
    return redirect(jobs_url)


def _selected(model_admin: TaskAdmin, request: HttpRequest, insp: Inspector, name: str,
              action: Action, back: str) -> HttpResponse:
    selection = request.POST.getlist(SELECTED)[:MAX_SELECTED]
    infos = _summaries(insp, _parse(selection))
    if not selection:
        messages.warning(request, "Items must be selected in order to perform actions on "
                                  "them. No items have been changed.")
        return redirect(back)
    if not infos:
        messages.warning(request, "None of the selected tasks exists any more.")
        return redirect(back)
    if request.POST.get("post") != "yes":
        return _confirm(model_admin, request, action, back, tasks=infos, selection=selection,
                        description=ngettext("the selected task", "the %(n)s selected tasks",
                                             len(infos)) % {"n": len(infos)})
    by_queue: dict[str, list[TaskInfo]] = defaultdict(list)
    for info in infos:
        by_queue[info.queue_name].append(info)
    if name == "requeue":
        moved = {i for queue, group in by_queue.items()
                 for i in insp.requeue(queue, [t.id for t in group])}
        done = [i for i in infos if i.id in moved]
        for state in RUNNABLE:
            log_change(request, [_task_object(i) for i in done if i.state == state], CHANGE,
                       f"Ran now from {state}")
        _report(request, len(done), len(infos), "%(n)s task moved to pending",
                "%(n)s tasks moved to pending",
                "not scheduled, retry or dead any more, so not moved")
    elif name == "cancel":
        _cancel(request, insp, by_queue, infos)
    else:
        deleted = {i for queue, group in by_queue.items()
                   for i in insp.delete(queue, [t.id for t in group])[0]}
        done = [i for i in infos if i.id in deleted]
        log_change(request, [_task_object(i) for i in done], DELETION, "Deleted")
        _report(request, len(done), len(infos), "%(n)s task deleted", "%(n)s tasks deleted",
                "running, so not deleted")
    return redirect(back)


def _cancel(request: HttpRequest, insp: Inspector, by_queue: dict[str, list[TaskInfo]],
            infos: list[TaskInfo]) -> None:
    result = CancelResult()
    for queue, group in by_queue.items():
        result = result.merged(insp.cancel(queue, [t.id for t in group],
                                           request.user.get_username()))
    for ids, message in ((set(result.cancelled), "Cancelled"),
                         (set(result.requested), "Asked to stop (cancel requested)")):
        log_change(request, [_task_object(i) for i in infos if i.id in ids], CHANGE, message)
    said = [ngettext("%(n)s task cancelled", "%(n)s tasks cancelled",
                     len(result.cancelled)) % {"n": len(result.cancelled)}]
    if result.requested:
        said.append(ngettext("%(n)s running task asked to stop (its worker ends it)",
                             "%(n)s running tasks asked to stop (their workers end them)",
                             len(result.requested)) % {"n": len(result.requested)})
    messages.success(request, "; ".join(said) + ".")
    left = len(result.finished) + len(result.missing)
    if left:
        messages.warning(request, f"{left} of the selected tasks had already ended, so were "
                                  f"left as they were.")


def _confirm(model_admin: TaskAdmin, request: HttpRequest, action: Action, back: str,
             description: str, **extra: object) -> HttpResponse:
    context = page_context(
        model_admin, request, "Are you sure?", crumbs=[("Confirm", None)],
        question=action.question.format(description), action_name=request.POST["action"],
        action_url=url(model_admin, "action"), back=back, **extra)
    return TemplateResponse(request, f"{TEMPLATES}/confirm.html", context)


def _state(request: HttpRequest, action: Action) -> str:
    state = request.POST.get("state", "")
    if state not in action.states:
        raise BadRequest(f"not possible for {state or 'unnamed'} tasks: "
                         f"{action.question.format('them')}")
    return state


def _summaries(insp: Inspector, pairs: list[tuple[str, str]]) -> list[TaskInfo]:
    """The selected tasks that still exist, in the order selected, read as a list reads
    them (a summary each, however big the task)."""
    ids: dict[str, list[str]] = defaultdict(list)
    for queue, task_id in pairs:
        ids[queue].append(task_id)
    found = {(queue, info.id): info for queue, group in ids.items()
             for info in insp.summaries(queue, group) if info is not None}
    return [found[pair] for pair in dict.fromkeys(pairs) if pair in found]


def _parse(selection: Sequence[str]) -> list[tuple[str, str]]:
    """Checkbox values are "queue:id" (a queue name never holds a colon)."""
    pairs = []
    for value in selection:
        queue, sep, task_id = value.partition(":")
        if not sep or not task_id:
            raise BadRequest(f"malformed selection {value!r}")
        pairs.append((queue_param({"queue": queue}, required=True), task_id))
    return pairs


def _report(request: HttpRequest, done: int, asked: int, singular: str, plural: str,
            why_not: str) -> None:
    messages.success(request, ngettext(singular, plural, done) % {"n": done})
    if done < asked:
        messages.warning(request, f"{asked - done} of the selected tasks were {why_not}.")


def _task_object(info: TaskInfo) -> Task:
    return Task(id=info.id, name=info.name)


def _queue_object(queue: str) -> Task:
    return Task(id=queue, name="queue")
