"""The admin's "Run all" / "Delete all": the request queues a bulk job (and logs it) and
moves no task itself; the dashboard shows the jobs; permissions and CSRF.

A job is run here by the BulkJobs component in this process (tests/unit/test_bulk_jobs.py
runs it in a real worker).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client

from demo.tasks import record
from django_bgtasks import get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.bulk import BulkJob, BulkJobStore
from django_bgtasks.worker.bulk import BulkJobs
from django_bgtasks.worker.config import WorkerConfig
from helpers import counts, drive, seed_dead

pytestmark = pytest.mark.django_db

ACTION = "/admin/django_bgtasks/task/action/"
DASHBOARD = "/admin/django_bgtasks/task/"
DEAD_LIST = "/admin/django_bgtasks/task/dead/?queue=default"


@pytest.fixture(autouse=True)
def enqueue_at_once(bgtasks_redis, settings):
    # Each test runs inside a transaction that never commits: enqueue must not wait for it.
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


def login(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def staff(name: str, *perms: str) -> Client:
    user = User.objects.create_user(name, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="django_bgtasks", codename__in=[f"{p}_task" for p in perms]))
    return login(user)


@pytest.fixture
def root() -> Client:
    return login(User.objects.create_superuser("root", "root@example.com", None))


def run_all(client: Client, action: str, state: str = "dead", confirm: bool = True, **extra):
    data = {"action": action, "queue": "default", "state": state, "next": DEAD_LIST, **extra}
    if confirm:
        data["post"] = "yes"
    return client.post(ACTION, data)


def jobs(queue: str = "default") -> list[BulkJob]:
    return BulkJobStore(get_broker()).jobs([queue])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


def run_jobs() -> None:
    """What a worker's maintenance process does with the queued jobs."""
    BulkJobs(get_broker(), WorkerConfig(queues={"default": 1}), "test:1/1:1").tick()


@pytest.mark.parametrize("action,verb", [("requeue_all", "requeue"), ("delete_all", "delete")])
def test_the_request_queues_a_job_logs_it_and_moves_nothing(root, action, verb):
    seed_dead(1200)
    seed_dead(1, "mail")

    confirm = run_all(root, action, confirm=False)
    html = confirm.content.decode()
    assert "every dead task of queue default" in html
    assert "<strong>1,200</strong> dead tasks of queue default will be affected." in html
    assert "This queues a bulk job" in html

    response = run_all(root, action)

    assert response.status_code == 302 and response["Location"] == DASHBOARD + "#bulk-jobs"
    assert counts()["dead"] == 1200 and counts()["pending"] == 0  # the request moved none
    [job] = jobs()
    assert (job.status, job.action, job.state, job.total, job.requested_by) == (
        "queued", verb, "dead", 1200, "root")
    [entry] = LogEntry.objects.all()
    what = "run all 1,200 dead tasks of queue default now" if verb == "requeue" \
        else "delete all 1,200 dead tasks of queue default"
    assert (entry.object_id, entry.action_flag, entry.change_message) == (
        "default", CHANGE, f"Queued: {what} (bulk job {job.id})")
    assert entry.user.username == "root"
    assert f"Queued: {what}. A worker runs it in batches; its progress is under Bulk " \
           f"jobs." in messages_of(response)
    # no worker is running in this test
    assert "No running worker serves queue default: the job waits until one does." \
        in messages_of(response)

    run_jobs()
    assert counts()["dead"] == 0 and counts()["pending"] == (1200 if verb == "requeue" else 0)
    assert counts("mail")["dead"] == 1  # other queues untouched
    assert (jobs()[0].status, jobs()[0].done) == ("done", 1200)


def test_a_second_identical_request_is_refused_while_the_first_is_pending(root):
    seed_dead(3)
    run_all(root, "requeue_all")
    again = run_all(root, "requeue_all")
    assert again["Location"] == DASHBOARD + "#bulk-jobs"
    assert ("Already queued: run all 3 dead tasks of queue default now (0 of 3 done). Nothing "
            "new was queued; its progress is under Bulk jobs.") in messages_of(again)
    assert len(jobs()) == 1 and LogEntry.objects.count() == 1
    assert run_all(root, "delete_all").status_code == 302  # another action is another job
    assert len(jobs()) == 2


def test_an_empty_state_queues_nothing(root):
    response = run_all(root, "delete_all", state="retry")
    assert response["Location"] == DEAD_LIST
    assert "Queue default has no retry task: nothing to do." in messages_of(response)
    assert jobs() == [] and LogEntry.objects.count() == 0


def test_the_dashboard_shows_each_job_its_progress_and_what_it_waits_for(root):
    seed_dead(5)
    page = root.get(DASHBOARD).content.decode()
    assert "<caption>Bulk jobs</caption>" in page and "No bulk job." in page

    run_all(root, "requeue_all")
    page = root.get(DASHBOARD).content.decode()
    assert 'id="bulk-jobs"' in page
    assert "Run all 5 dead tasks of queue default now" in page
    assert "Waiting for a worker that serves queue default" in page
    assert '<progress max="5" value="0"></progress> 0 / 5 (0%)' in page

    run_jobs()
    page = root.get(DASHBOARD).content.decode()
    assert '<tr class="bgtasks-job-done">' in page
    assert '<progress max="5" value="5"></progress> 5 / 5 (100%)' in page


def test_a_running_job_whose_lease_lapsed_says_it_waits_for_a_takeover(root):
    seed_dead(5)
    store = BulkJobStore(get_broker())
    store.queue("default", "dead", "delete", "ada")
    store.step(store.claim("default", "gone:1/1:1", 1), "gone:1/1:1", 1, 2)
    page = root.get(DASHBOARD).content.decode()
    assert "Its worker stopped: another worker takes it over" in page
    assert "2 / 5 (40%)" in page


def test_requester_names_are_escaped_on_the_dashboard(root):
    seed_dead(1)
    BulkJobStore(get_broker()).queue("default", "dead", "delete", "<script>alert(1)</script>")
    page = root.get(DASHBOARD).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_view_only_staff_sees_the_jobs_but_cannot_queue_one():
    seed_dead(2)
    BulkJobStore(get_broker()).queue("default", "dead", "requeue", "ada")
    viewer = staff("viewer", "view")
    page = viewer.get(DASHBOARD).content.decode()
    assert "Run all 2 dead tasks of queue default now" in page and "ada" in page
    assert run_all(viewer, "requeue_all").status_code == 403
    assert run_all(viewer, "delete_all").status_code == 403
    assert len(jobs()) == 1 and LogEntry.objects.count() == 0


def test_run_all_needs_change_and_delete_all_needs_delete():
    seed_dead(2)
    changer, deleter = staff("changer", "view", "change"), staff("deleter", "view", "delete")
    assert run_all(changer, "delete_all").status_code == 403
    assert run_all(deleter, "requeue_all").status_code == 403
    assert jobs() == []
    assert run_all(changer, "requeue_all").status_code == 302
    assert run_all(deleter, "delete_all").status_code == 302
    assert sorted((j.action, j.requested_by) for j in jobs()) == [
        ("delete", "deleter"), ("requeue", "changer")]


def test_queueing_a_job_needs_the_csrf_token():
    seed_dead(2)
    client = login(User.objects.create_superuser("root", "root@example.com", None),
                   enforce_csrf_checks=True)
    assert run_all(client, "requeue_all").status_code == 403
    assert jobs() == [] and LogEntry.objects.count() == 0

    page = client.get(DEAD_LIST).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert run_all(client, "requeue_all", csrfmiddlewaretoken=token).status_code == 302
    assert len(jobs()) == 1


def test_cancel_all_queues_a_job_that_cancels_queued_tasks_and_asks_running_ones(root):
    pending = [record.enqueue(f"p{i}").id for i in range(3)]
    drive(pending[:1], None)  # one of them runs
    confirm = run_all(root, "cancel_all", state="pending", confirm=False)
    assert "Are you sure you want to cancel every pending task of queue default?" \
        in confirm.content.decode()

    response = run_all(root, "cancel_all", state="pending")
    run_all(root, "cancel_all", state="active")

    assert counts()["pending"] == 2  # the request cancelled none itself
    assert [(e.change_message.split(" (bulk job")[0]) for e in
            LogEntry.objects.order_by("pk")] == [
        "Queued: cancel all 2 pending tasks of queue default",
        "Queued: cancel all 1 active task of queue default"]
    assert "Queued: cancel all 2 pending tasks of queue default. A worker runs it in " \
           "batches; its progress is under Bulk jobs." in messages_of(response)
    run_jobs()
    run_jobs()
    assert (counts()["pending"], counts()["cancelled"], counts()["active"]) == (0, 2, 1)
    assert sorted((j.action, j.state, j.status, j.done) for j in jobs()) == [
        ("cancel", "active", "done", 1), ("cancel", "pending", "done", 2)]
    infos = [get_task_info(i) for i in pending]
    assert [i.cancelled_by for i in infos] == ["root"] * 3
    assert infos[0].cancel_requested
