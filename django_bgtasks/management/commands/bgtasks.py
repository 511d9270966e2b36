"""``manage.py bgtasks``: see and act on the queues from the command line.

Every read and action goes through broker.inspect.Inspector, as the admin pages do.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_bgtasks import cli_format as fmt
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.inspect import Inspector
from django_bgtasks.broker.keys import validate_queue_name
from django_bgtasks.conf import get_settings
from django_bgtasks.exceptions import BgTasksError
from django_bgtasks.info import STATES, TaskInfo

RUNNABLE = ("scheduled", "retry", "dead")  # states "run now" applies to
DELETABLE = tuple(s for s in STATES if s != "active")


class Command(BaseCommand):
    help = ("Inspect and manage django-bgtasks queues: counts and workers, task lists and "
            "details, run now, delete, pause and resume.")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        def add(name: str, text: str) -> CommandParser:
            return sub.add_parser(name, help=text, description=text)

        def queue_option(p: CommandParser, text: str) -> None:
            p.add_argument("--queue", "-q", metavar="Q", help=text)

        def json_option(p: CommandParser) -> None:
            p.add_argument("--json", action="store_true",
                           help="Print machine-readable JSON instead of text.")

        p = add("stats", "Show each queue's task counts per state, today's processed and "
                         "failed counts, whether it is paused, and the live workers.")
        json_option(p)

        p = add("list", "List the tasks in one state (oldest due first; dead and completed: "
                        "newest first).")
        p.add_argument("state", choices=STATES, metavar="STATE",
                       help=f"One of: {', '.join(STATES)}.")
        queue_option(p, "Only this queue (default: every queue).")
        p.add_argument("--limit", "-n", type=int, default=20,
                       help="Show at most this many tasks (default: 20).")
        p.add_argument("--name", metavar="SUBSTR",
                       help="Only tasks whose name contains SUBSTR (case-insensitive).")
        json_option(p)

        p = add("show", "Show everything about one task: arguments, timestamps, error "
                        "history and traceback.")
        p.add_argument("task_id", metavar="ID", help="The task id.")
        queue_option(p, "Look only in this queue (default: search every queue).")
        json_option(p)

        p = add("requeue", "Run tasks now: move a scheduled, retry or dead task (by id), or "
                           "all tasks of such a state (with --all), to pending.")
        p.add_argument("target", metavar="STATE|ID",
                       help=f"A task id, or with --all one of: {', '.join(RUNNABLE)}.")
        queue_option(p, "With --all: only this queue (default: every queue). With an id: "
                        "the task's queue (default: found by searching).")
        p.add_argument("--all", action="store_true", dest="all_tasks",
                       help="Requeue every task in STATE.")

        p = add("delete", "Delete a task (by id), or all tasks of a state (with --all). "
                          "Running (active) tasks are never deleted.")
        p.add_argument("target", metavar="STATE|ID",
                       help=f"A task id, or with --all one of: {', '.join(DELETABLE)}.")
        queue_option(p, "With --all: only this queue (default: every queue). With an id: "
                        "the task's queue (default: found by searching).")
        p.add_argument("--all", action="store_true", dest="all_tasks",
                       help="Delete every task in STATE.")

        p = add("pause", "Pause a queue: workers take no new tasks from it; its tasks stay.")
        p.add_argument("queue", metavar="Q", help="The queue name.")
        p = add("resume", "Resume a paused queue: workers take its tasks again.")
        p.add_argument("queue", metavar="Q", help="The queue name.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if options.get("queue") is not None:
            try:
                validate_queue_name(options["queue"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        try:
            inspector = Inspector(get_broker())
        except ValueError as exc:  # a malformed REDIS_URL
            raise CommandError(f"BGTASKS REDIS_URL: {exc}") from None
        try:
            getattr(self, f"do_{action}")(inspector, **options)
        except BgTasksError as exc:
            raise CommandError(str(exc)) from exc

    # -- reads ----------------------------------------------------------------------------

    def do_stats(self, inspector: Inspector, *, json: bool, **_: Any) -> None:
        stats = inspector.stats(all_queues(inspector))
        workers = inspector.workers()
        if json:
            self.stdout.write(fmt.to_json(fmt.stats_data(stats, workers)))
        else:
            self.stdout.write(fmt.stats_text(stats, workers))

    def do_list(self, inspector: Inspector, *, state: str, queue: str | None, limit: int,
                name: str | None, json: bool, **_: Any) -> None:
        if limit < 0:
            raise CommandError("--limit must be 0 or more")
        tasks = inspector.tasks(state, queue)
        total = tasks.count()
        data: dict[str, Any] = {"state": state, "queue": queue, "total": total}
        if name:
            rows, scanned, complete = inspector.find_by_name(state, name, queue, limit)
            data.update(name=name, scanned=scanned, complete=complete)
            footer = f"{len(rows)} {state} task(s) named like {name!r}"
            if not complete:
                footer += (f" (stopped after reading {scanned} of {total}; "
                           "narrow it with --queue or raise --limit)")
        else:
            rows = tasks[:limit]
            footer = f"{len(rows)} of {total} {state} task(s)"
        if json:
            self.stdout.write(fmt.to_json({**data, "tasks": [fmt.row_data(r) for r in rows]}))
            return
        where = f" in queue {queue!r}" if queue else ""
        if rows:
            self.stdout.write(fmt.list_text(rows, state))
        self.stdout.write(f"{footer}{where}.")

    def do_show(self, inspector: Inspector, *, task_id: str, queue: str | None, json: bool,
                **_: Any) -> None:
        info = find_task(inspector, task_id, queue)
        self.stdout.write(fmt.to_json(fmt.task_data(info)) if json else fmt.show_text(info))

    # -- actions --------------------------------------------------------------------------

    def do_requeue(self, inspector: Inspector, *, target: str, queue: str | None,
                   all_tasks: bool, **_: Any) -> None:
        if target in STATES or all_tasks:
            state = bulk_state(target, all_tasks, RUNNABLE, "run now", queue)
            moved = {q: inspector.requeue_all(q, state) for q in action_queues(inspector, queue)}
            self.stdout.write(f"Moved {sum(moved.values())} {state} task(s) to pending"
                              f"{breakdown(moved)}.")
            return
        info = find_task(inspector, target, queue)
        if not inspector.requeue(info.queue_name, [info.id]):
            raise CommandError(f"task {info.id} is {info.state}: only "
                               f"{', '.join(RUNNABLE)} tasks can be run now")
        self.stdout.write(f"Moved 1 task to pending: {info.id} ({info.name}, queue "
                          f"{info.queue_name!r}, was {info.state}).")

    def do_delete(self, inspector: Inspector, *, target: str, queue: str | None,
                  all_tasks: bool, **_: Any) -> None:
        if target in STATES or all_tasks:
            state = bulk_state(target, all_tasks, DELETABLE, "deleted", queue)
            deleted = {q: inspector.delete_all(q, state) for q in action_queues(inspector, queue)}
            self.stdout.write(f"Deleted {sum(deleted.values())} {state} task(s)"
                              f"{breakdown(deleted)}.")
            return
        info = find_task(inspector, target, queue)
        done, refused = inspector.delete(info.queue_name, [info.id])
        if refused:
            raise CommandError(f"task {info.id} is running (active) and cannot be deleted; "
                               "wait until it finishes")
        if not done:
            raise CommandError(f"task {info.id} could not be deleted (it changed meanwhile)")
        self.stdout.write(f"Deleted 1 task: {info.id} ({info.name}, queue "
                          f"{info.queue_name!r}, was {info.state}).")

    def do_pause(self, inspector: Inspector, *, queue: str, **_: Any) -> None:
        inspector.pause(existing_queue(inspector, queue))
        self.stdout.write(f"Paused queue {queue!r}: workers take no new tasks from it until "
                          f"`bgtasks resume {queue}`; its tasks stay.")

    def do_resume(self, inspector: Inspector, *, queue: str, **_: Any) -> None:
        inspector.resume(existing_queue(inspector, queue))
        self.stdout.write(f"Resumed queue {queue!r}.")


def all_queues(inspector: Inspector) -> list[str]:
    """Queues seen in Redis plus the configured ones (which may still be empty)."""
    return sorted(set(inspector.queues()) | set(get_settings().QUEUES))


def action_queues(inspector: Inspector, queue: str | None) -> list[str]:
    return [queue] if queue else inspector.queues()


def existing_queue(inspector: Inspector, queue: str) -> str:
    known = all_queues(inspector)
    if queue not in known:
        raise CommandError(f"unknown queue {queue!r}; known queues: {', '.join(known) or 'none'}")
    return queue


def find_task(inspector: Inspector, task_id: str, queue: str | None) -> TaskInfo:
    info = inspector.get(task_id, queue)
    if info is None:
        where = f" in queue {queue!r}" if queue else ""
        raise CommandError(f"no task with id {task_id!r}{where}")
    return info


def bulk_state(target: str, all_tasks: bool, allowed: tuple[str, ...], verb: str,
               queue: str | None) -> str:
    """The state a bulk action applies to, or a CommandError saying what to type."""
    if target not in STATES:
        raise CommandError(f"unknown state {target!r}; --all takes one of: {', '.join(allowed)}")
    if target == "active" and "active" not in allowed:
        raise CommandError("running (active) tasks cannot be deleted; wait until they finish")
    if target not in allowed:
        raise CommandError(f"{target} tasks cannot be {verb}: only {', '.join(allowed)} "
                           "tasks can")
    if not all_tasks:
        where = f" of queue {queue!r}" if queue else " of every queue"
        raise CommandError(f"{target!r} is a state, not a task id: add --all to act on every "
                           f"{target} task{where}")
    return target


def breakdown(counts: dict[str, int]) -> str:
    """' (default: 3, mail: 1)' when more than one queue had any."""
    busy = {q: n for q, n in counts.items() if n}
    return f" ({', '.join(f'{q}: {n}' for q, n in busy.items())})" if len(busy) > 1 else ""
