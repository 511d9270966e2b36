"""``manage.py bgtasks``: see and act on the queues from the command line.

Every read and action goes through broker.inspect.Inspector, as the admin pages do; the
``cron`` subcommands go through periodic_status.PeriodicEntries, and ``workflow`` /
``workflows`` through ops.workflows.Workflows.
"""

from __future__ import annotations

import getpass
import json as json_module
import socket
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_bgtasks.broker import get_broker
from django_bgtasks.broker.keys import CANCELLABLE, DELETABLE, RUNNABLE, validate_queue_name
from django_bgtasks.broker.metrics import MetricsStore
from django_bgtasks.exceptions import BgTasksError
from django_bgtasks.info import STATES, TaskInfo, ms_to_datetime
from django_bgtasks.management import cli_format as fmt
from django_bgtasks.management import cli_limits, cli_taskstats, cli_workflows
from django_bgtasks.metrics import PrometheusMissing
from django_bgtasks.metrics.collector import exposition
from django_bgtasks.metrics.readings import autoscale_data, exported_queues
from django_bgtasks.ops.health import check_health
from django_bgtasks.ops.inspect import Inspector
from django_bgtasks.ops.search import TaskSearch
from django_bgtasks.ops.settings import settings_report
from django_bgtasks.ops.taskstats import SORTS, WINDOWS, task_stats
from django_bgtasks.ops.workflows import RECENT_MOST, Workflows
from django_bgtasks.periodic import PeriodicEntry
from django_bgtasks.periodic.status import PeriodicEntries, upcoming
from django_bgtasks.workflows.info import WorkflowNotFound

MAX_NEXT = 100  # `cron next -n` at most
MEMBERS_SHOWN = 50  # `workflow` lists this many members by default


class Command(BaseCommand):
    help = ("Inspect and manage django-bgtasks queues: counts and workers, task lists and "
            "details, live limits, run now, delete, cancel, pause and resume; the "
            "workflows; and the periodic entries.")

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
        # dest: call_command() keeps "args" for positional arguments
        p.add_argument("--args", metavar="SUBSTR", dest="search_args",
                       help="Only tasks whose arguments, as listed, contain SUBSTR "
                            "(case-insensitive; a long message: its first 512 bytes).")
        p.add_argument("--error", metavar="SUBSTR",
                       help="Only tasks whose latest error contains SUBSTR "
                            "(case-insensitive).")
        p.add_argument("--worker", metavar="SUBSTR",
                       help="Only tasks whose latest attempt ran on a worker whose id "
                            "contains SUBSTR.")
        json_option(p)

        p = add("show", "Show everything about one task: arguments, timestamps, error "
                        "history and traceback.")
        p.add_argument("task_id", metavar="ID", help="The task id.")
        queue_option(p, "Look only in this queue (default: search every queue).")
        json_option(p)

        def task_action(name: str, text: str, states: tuple[str, ...], all_text: str) -> None:
            """An action on a task by id, or on every task of a state with --all."""
            p = add(name, text)
            p.add_argument("target", metavar="STATE|ID",
                           help=f"A task id, or with --all one of: {', '.join(states)}.")
            queue_option(p, "With --all: only this queue (default: every queue). With an "
                            "id: the task's queue (default: found by searching).")
            p.add_argument("--all", action="store_true", dest="all_tasks", help=all_text)

        task_action("requeue", "Run tasks now: move a scheduled, retry or dead task (by id), "
                               "or all tasks of such a state (with --all), to pending.",
                    RUNNABLE, "Requeue every task in STATE.")
        task_action("delete", "Delete a task (by id), or all tasks of a state (with --all). "
                              "Running (active) tasks are never deleted.",
                    DELETABLE, "Delete every task in STATE.")
        task_action("cancel", "Cancel a task (by id), or all tasks of a state (with --all): "
                              "a queued one (pending, waiting, scheduled, retry) is cancelled "
                              "at once and never runs; a running one is asked to stop; an "
                              "ended one is left as it is.",
                    CANCELLABLE, "Cancel every task in STATE.")

        p = add("limits", "Show the live limits of each queue: running / concurrency, rate "
                          "and tokens left, how many tasks wait and how long the first of "
                          "them has waited.")
        queue_option(p, "Only this queue's limits (default: every queue).")
        json_option(p)

        p = add("taskstats", "Show per task name and queue: runs, failed runs (retried or "
                             "dead), failure rate, duration and queue latency p50/p95/p99, "
                             "over the last hour, the last day, or since the counters began.")
        p.add_argument("--window", "-w", choices=list(WINDOWS), default="hour",
                       help="hour (default), day (24 hours) or total (since the counters "
                            "began).")
        p.add_argument("--sort", choices=list(SORTS), default="runs",
                       help="Order by runs (default), failure rate, p95 duration, p95 "
                            "latency (largest first) or name.")
        queue_option(p, "Only this queue (default: every queue).")
        json_option(p)

        p = add("settings", "Show the effective BGTASKS settings (defaults filled in, "
                            "credentials hidden) and the Django Tasks backends' OPTIONS.")
        json_option(p)

        p = add("metrics", "Print the Prometheus metrics, as the metrics endpoint serves them "
                           "(text exposition format); with --json, the autoscaling JSON.")
        p.add_argument("--json", action="store_true",
                       help="Print the autoscaling JSON instead: per queue pending, active, "
                            "threads and load.")

        p = add("pause", "Pause a queue: workers take no new tasks from it; its tasks stay.")
        p.add_argument("queue", metavar="Q", help="The queue name.")
        p = add("resume", "Resume a paused queue: workers take its tasks again.")
        p.add_argument("queue", metavar="Q", help="The queue name.")

        p = add("jobs", "Show the bulk jobs that the admin's \"run all\" and \"delete all\" "
                        "queue: queued, running and the last finished ones, with their "
                        "progress.")
        queue_option(p, "Only this queue's jobs (default: every queue).")
        json_option(p)

        p = add("workflow", "Show one workflow (chain, group, chord, or a task's depends_on): "
                            "its shape, state, members' counts by state, its callback and "
                            "on_complete, and its members; or cancel it (--cancel).")
        p.add_argument("workflow_id", metavar="ID", help="The workflow id.")
        p.add_argument("--limit", "-n", type=int, default=MEMBERS_SHOWN,
                       help=f"List at most this many members (default: {MEMBERS_SHOWN}); "
                            "--json lists them all.")
        p.add_argument("--cancel", action="store_true",
                       help="Cancel the workflow first: its members not started are "
                            "cancelled, running ones are asked to stop.")
        json_option(p)

        p = add("workflows", "List the newest workflows still kept, newest first: id, kind, "
                             "shape, state, members ended, created and finished.")
        p.add_argument("--limit", "-n", type=int, default=20,
                       help=f"Show at most this many (default: 20, at most {RECENT_MOST}).")
        json_option(p)

        p = add("health", "Check health for a probe: Redis answers, and with --worker a "
                          "worker on this host heartbeats, and with --queue and --max-age "
                          "no pending task of the queue has waited longer. Exit 0 with "
                          "'ok: ...' on stdout, or 1 with 'unhealthy: <reason>' on stderr.")
        p.add_argument("--worker", action="store_true",
                       help="Also require a worker on this host (its host name, as the "
                            "worker announces it) with a live heartbeat: a worker "
                            "container's liveness probe.")
        p.add_argument("--queue", "-q", metavar="Q", action="append", dest="queues",
                       help="With --max-age: the queue to check (repeat for more).")
        p.add_argument("--max-age", type=float, metavar="SECONDS",
                       help="With --queue: unhealthy when the queue's oldest pending task "
                            "has waited more than SECONDS since it was due.")

        p = add("cron", "Periodic entries: list them with their health, show their next "
                        "runs, run one now, switch one off or on.")
        self.add_cron_arguments(p, json_option)

    def add_cron_arguments(self, parser: CommandParser,
                           json_option: Callable[[CommandParser], None]) -> None:
        sub = parser.add_subparsers(dest="cron_action", required=True, metavar="CRON_ACTION",
                                    help="ls, next, run, enable or disable.")

        def add(name: str, text: str) -> CommandParser:
            return sub.add_parser(name, help=text, description=text)

        def name_argument(p: CommandParser, **kwargs: Any) -> None:
            p.add_argument("name", metavar="NAME", help="The entry's name.", **kwargs)

        p = add("ls", "List every periodic entry: on or off, schedule, time zone, next run, "
                      "last run and health (OVERDUE, NEW, CHANGED).")
        json_option(p)
        p = add("next", "Show the next runs of one entry (or every entry), in the entry's "
                        "time zone and in UTC.")
        name_argument(p, nargs="?")
        p.add_argument("--count", "-n", type=int, default=5,
                       help=f"How many runs per entry (default: 5, at most {MAX_NEXT}).")
        json_option(p)
        p = add("run", "Enqueue the entry's task now, with its configured arguments, outside "
                       "its schedule (the next tick still fires).")
        name_argument(p)
        p = add("enable", "Switch an entry on, on every host. Ticks missed while it was off "
                          "do not run.")
        name_argument(p)
        p = add("disable", "Switch an entry off, on every host, until `cron enable`.")
        name_argument(p)

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        # Stored data may hold terminal escape sequences: every text this command prints is
        # escaped, error messages too (Django writes a CommandError to self.stderr).
        self.stdout, self.stderr = fmt.EscapingOutput(self.stdout), fmt.EscapingOutput(self.stderr)
        if action == "health":  # its own short-timeout broker, its own exit code
            self.do_health(**options)
            return
        if options.get("queue") is not None:
            try:
                validate_queue_name(options["queue"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        if action == "settings":  # needs no Redis, and shows even a malformed URL's place
            self.do_settings(**options)
            return
        try:
            inspector = Inspector(get_broker())
        except BgTasksError as exc:  # a malformed URL; a cluster's client connects as made
            raise CommandError(str(exc)) from exc
        try:
            getattr(self, f"do_{action}")(inspector, **options)
        except BgTasksError as exc:
            raise CommandError(str(exc)) from exc

    # -- reads ----------------------------------------------------------------------------

    def do_health(self, *, worker: bool, queues: list[str] | None, max_age: float | None,
                  **_: Any) -> None:
        queues = queues or []
        if (max_age is None) != (not queues):
            raise CommandError("--queue and --max-age go together")
        if max_age is not None and not max_age >= 0:  # NaN too
            raise CommandError("--max-age must be 0 or more seconds")
        for queue in queues:
            try:
                validate_queue_name(queue)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        result = check_health(socket.gethostname() if worker else None, queues, max_age)
        if result.ok:
            self.stdout.write(result.line)
            return
        # A probe shows its command's output as the reason: the line alone, no
        # "CommandError:" and no traceback, and exit status 1 as for any failed check.
        self.stderr.write(result.line)
        raise SystemExit(1)

    def do_stats(self, inspector: Inspector, *, json: bool, **_: Any) -> None:
        queues = all_queues(inspector)
        stats = inspector.stats(queues)
        ages = MetricsStore(inspector.broker).pending_ages(queues)
        workers = inspector.workers()
        if json:
            self.stdout.write(fmt.to_json(fmt.stats_data(stats, workers, ages)))
        else:
            self.stdout.write(fmt.stats_text(stats, workers, ages))

    def do_limits(self, inspector: Inspector, *, queue: str | None, json: bool,
                  **_: Any) -> None:
        report = inspector.limits([queue] if queue else None)
        if json:
            self.stdout.write(fmt.to_json(cli_limits.limits_data(report)))
        else:
            self.stdout.write(cli_limits.limits_text(report, queue))

    def do_metrics(self, inspector: Inspector, *, json: bool, **_: Any) -> None:
        if json:
            self.stdout.write(fmt.to_json(autoscale_data(inspector.broker)))
            return
        try:
            self.stdout.write(exposition(inspector.broker).decode(), ending="")
        except PrometheusMissing as exc:
            raise CommandError(str(exc)) from None

    def do_taskstats(self, inspector: Inspector, *, window: str, sort: str,
                     queue: str | None, json: bool, **_: Any) -> None:
        rows = task_stats(inspector.broker, [queue] if queue else all_queues(inspector),
                          window, sort)
        if json:
            self.stdout.write(fmt.to_json(cli_taskstats.taskstats_data(rows, window)))
        else:
            self.stdout.write(cli_taskstats.taskstats_text(rows, window))

    def do_settings(self, *, json: bool, **_: Any) -> None:
        rows = settings_report()
        if json:
            self.stdout.write(fmt.to_json({row.name: row.value for row in rows}))
            return
        self.stdout.write(fmt.table(
            ["SETTING", "VALUE", "FROM"],
            [[row.name, row.value if isinstance(row.value, str) else json_module.dumps(row.value),
              "default" if row.is_default else "settings"] for row in rows]))

    def do_list(self, inspector: Inspector, *, state: str, queue: str | None, limit: int,
                json: bool, **options: Any) -> None:
        if limit < 0:
            raise CommandError("--limit must be 0 or more")
        tasks = inspector.tasks(state, queue)
        total = tasks.count()
        data: dict[str, Any] = {"state": state, "queue": queue, "total": total}
        search = TaskSearch.from_params({**options, "args": options.get("search_args")})
        if search:
            rows, scanned, complete = inspector.search(state, search, queue, limit)
            data.update(search.terms(), scanned=scanned, complete=complete)
            footer = f"{len(rows)} {state} task(s) whose {search.describe()}"
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
        info = find_task(inspector, task_id, queue, whole=True)
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

    def do_cancel(self, inspector: Inspector, *, target: str, queue: str | None,
                  all_tasks: bool, **_: Any) -> None:
        by = who_runs_this()
        if target in STATES or all_tasks:
            state = bulk_state(target, all_tasks, CANCELLABLE, "cancelled", queue)
            results = {q: inspector.cancel_all(q, state, by)
                       for q in action_queues(inspector, queue)}
            if state == "active":
                asked = {q: len(r.requested) for q, r in results.items()}
                self.stdout.write(f"Asked {sum(asked.values())} running task(s) to stop"
                                  f"{breakdown(asked)}; their workers end them.")
            else:
                done = {q: len(r.cancelled) for q, r in results.items()}
                self.stdout.write(f"Cancelled {sum(done.values())} {state} task(s)"
                                  f"{breakdown(done)}.")
            return
        info = find_task(inspector, target, queue)
        result = inspector.cancel(info.queue_name, [info.id], by)
        what = f"{info.id} ({info.name}, queue {info.queue_name!r}"
        if result.cancelled:
            self.stdout.write(f"Cancelled 1 task: {what}, was {info.state}); it will not run.")
        elif result.requested:
            self.stdout.write(f"Asked 1 running task to stop: {what}); its worker ends it.")
        else:
            state = result.finished.get(info.id, info.state)
            self.stdout.write(f"Nothing to cancel: {what}) is {state}; it was left as it is.")

    def do_jobs(self, inspector: Inspector, *, queue: str | None, json: bool,
                **_: Any) -> None:
        jobs = inspector.bulk_jobs([queue] if queue else None)
        if json:
            self.stdout.write(fmt.to_json({"jobs": [fmt.job_data(job) for job in jobs]}))
        else:
            self.stdout.write(fmt.jobs_text(jobs))

    def do_pause(self, inspector: Inspector, *, queue: str, **_: Any) -> None:
        inspector.pause(existing_queue(inspector, queue))
        self.stdout.write(f"Paused queue {queue!r}: workers take no new tasks from it until "
                          f"`bgtasks resume {queue}`; its tasks stay.")

    def do_resume(self, inspector: Inspector, *, queue: str, **_: Any) -> None:
        inspector.resume(existing_queue(inspector, queue))
        self.stdout.write(f"Resumed queue {queue!r}.")

    # -- workflows ----------------------------------------------------------------------

    def do_workflow(self, inspector: Inspector, *, workflow_id: str, limit: int,
                    cancel: bool, json: bool, **_: Any) -> None:
        if limit < 0:
            raise CommandError("--limit must be 0 or more")
        workflows = Workflows(inspector.broker)
        extra: dict[str, Any] = {}
        try:
            if cancel:
                _, extra["cancelled"] = workflows.cancel(
                    workflow_id, who_runs_this("workflow --cancel"))
            info = workflows.get(workflow_id)
        except WorkflowNotFound as exc:
            raise CommandError(str(exc)) from None
        finals = workflows.finals(info)
        members = workflows.member_list(info)
        if json:
            data = cli_workflows.workflow_data(info, finals, list(members))
            self.stdout.write(fmt.to_json({**data, **extra}))
            return
        if cancel:
            self.stdout.write(
                f"Cancelled workflow {info.id}: its members not started are cancelled, "
                "running ones are asked to stop.\n" if extra["cancelled"] else
                f"Nothing to cancel: workflow {info.id} "
                f"{'had ended' if info.finished_at else 'was cancelled already'}; it was "
                "left as it is.\n")
        self.stdout.write(cli_workflows.workflow_text(info, finals, members[:limit]))

    def do_workflows(self, inspector: Inspector, *, limit: int, json: bool, **_: Any) -> None:
        if not 0 <= limit <= RECENT_MOST:
            raise CommandError(f"--limit must be between 0 and {RECENT_MOST}")
        infos = Workflows(inspector.broker).recent(limit)
        if json:
            self.stdout.write(fmt.to_json(cli_workflows.workflows_data(infos)))
        else:
            self.stdout.write(cli_workflows.workflows_text(infos))

    # -- periodic entries -----------------------------------------------------------------

    def do_cron(self, inspector: Inspector, *, cron_action: str, **options: Any) -> None:
        getattr(self, f"cron_{cron_action}")(PeriodicEntries(inspector.broker), **options)

    def cron_ls(self, periodic: PeriodicEntries, *, json: bool, **_: Any) -> None:
        statuses = periodic.statuses()
        if json:
            self.stdout.write(fmt.to_json({"entries": [fmt.status_data(s) for s in statuses],
                                           "problems": periodic.problems}))
        else:
            self.stdout.write(fmt.cron_ls_text(statuses))
        self.warn_problems(periodic)

    def cron_next(self, periodic: PeriodicEntries, *, name: str | None, count: int,
                  json: bool, **_: Any) -> None:
        if not 1 <= count <= MAX_NEXT:
            raise CommandError(f"--count must be between 1 and {MAX_NEXT}")
        statuses = [periodic.status(self.entry(periodic, name).name)] if name \
            else periodic.statuses()
        now = periodic.broker.server_time_ms()
        plans = [(s, upcoming(s.entry, now, count)) for s in statuses]
        if json:
            self.stdout.write(fmt.to_json(fmt.cron_next_data(plans)))
        else:
            self.stdout.write(fmt.cron_next_text(plans, ms_to_datetime(now)))

    def cron_run(self, periodic: PeriodicEntries, *, name: str, **_: Any) -> None:
        entry = self.entry(periodic, name)
        task_id, _status = periodic.run_now(entry.name)
        self.stdout.write(f"Enqueued periodic entry {entry.name!r} now ({entry.task_name} on "
                          f"queue {entry.task().queue_name!r}); its schedule is unchanged.")
        self.stdout.write(task_id)

    def cron_enable(self, periodic: PeriodicEntries, *, name: str, **_: Any) -> None:
        self.switch(periodic, name, True)

    def cron_disable(self, periodic: PeriodicEntries, *, name: str, **_: Any) -> None:
        self.switch(periodic, name, False)

    def switch(self, periodic: PeriodicEntries, name: str, on: bool) -> None:
        entry = self.entry(periodic, name)
        word = "enabled" if on else "disabled"
        if not periodic.set_enabled(entry.name, on):
            self.stdout.write(f"Periodic entry {entry.name!r} was already {word}; nothing "
                              "changed.")
            return
        after = ("its next tick fires; ticks missed while it was off do not run" if on
                 else f"it fires no more until `bgtasks cron enable {entry.name}`")
        self.stdout.write(f"{word.capitalize()} periodic entry {entry.name!r}: every host sees "
                          f"it at its next tick (within about a second), and {after}.")

    def entry(self, periodic: PeriodicEntries, name: str) -> PeriodicEntry:
        """The declared entry, or a CommandError naming the known ones."""
        try:
            return periodic.get(name)
        except LookupError as exc:
            self.warn_problems(periodic)  # the entry may be declared, but invalid
            raise CommandError(str(exc)) from None

    def warn_problems(self, periodic: PeriodicEntries) -> None:
        for problem in periodic.problems:
            self.stderr.write(f"warning: {problem}", self.style.WARNING)


def all_queues(inspector: Inspector) -> list[str]:
    """Queues seen in Redis plus the configured ones (which may still be empty)."""
    return exported_queues(inspector)


def action_queues(inspector: Inspector, queue: str | None) -> list[str]:
    return [queue] if queue else inspector.queues()


def existing_queue(inspector: Inspector, queue: str) -> str:
    known = all_queues(inspector)
    if queue not in known:
        raise CommandError(f"unknown queue {queue!r}; known queues: {', '.join(known) or 'none'}")
    return queue


def find_task(inspector: Inspector, task_id: str, queue: str | None,
              whole: bool = False) -> TaskInfo:
    """The task as a list reads it, or with ``whole`` all of it (``show``); else a
    CommandError."""
    info = inspector.get(task_id, queue) if whole else inspector.find(task_id, queue)
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


def who_runs_this(command: str = "cancel") -> str:
    """Who a cancel from the command line is recorded as: the OS user, and the command."""
    try:
        return f"{getpass.getuser()} (bgtasks {command})"
    except (OSError, KeyError):  # no login name in this environment (a bare container)
        return f"bgtasks {command}"


def breakdown(counts: dict[str, int]) -> str:
    """' (default: 3, mail: 1)' when more than one queue had any."""
    busy = {q: n for q, n in counts.items() if n}
    return f" ({', '.join(f'{q}: {n}' for q, n in busy.items())})" if len(busy) > 1 else ""

