"""Enqueue a handful of demo tasks covering the states the admin shows."""

import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from demo.tasks import add, always_fails, flaky, reminder, send_welcome, total, workflow_report
from django_bgtasks import chord, group


class Command(BaseCommand):
    help = (
        "Enqueue demo tasks: a few add(), a send_welcome() on the mail queue, a reminder() "
        "due in 5 s, a flaky() that succeeds on its third attempt and an always_fails() "
        "that ends in the dead queue; and a workflow: a chord of add() calls whose sum a "
        "callback takes, with an on_complete report."
    )

    def add_arguments(self, parser):
        parser.add_argument("--adds", type=int, default=3, help="how many add() tasks (3)")

    def handle(self, *args, **options):
        user_id = get_user_model().objects.order_by("pk").values_list("pk", flat=True).first() or 1
        enqueued = [(f"add({i}, {i * 10})", add.enqueue(i, i * 10)) for i in range(options["adds"])]
        enqueued += [
            (f"send_welcome({user_id})", send_welcome.enqueue(user_id)),
            (
                "reminder(...) in 5 s",
                reminder.using(run_after=timedelta(seconds=5)).enqueue("stretch your legs"),
            ),
            ("flaky(..., failures=2)", flaky.enqueue(f"demo-{uuid.uuid4().hex[:8]}", failures=2)),
            ("always_fails()", always_fails.enqueue()),
        ]
        for label, info in enqueued:
            self.stdout.write(
                f"{label:<26} id={info.id}  queue={info.queue_name}  state={info.state}"
            )
        workflow = (chord(group(add.s(i, i) for i in range(10)), total.s())
                    .on_complete(workflow_report.s()).enqueue())
        self.stdout.write(f"{'workflow ' + workflow.shape:<26} id={workflow.id}  "
                          f"size={workflow.size}  state={workflow.state}")
