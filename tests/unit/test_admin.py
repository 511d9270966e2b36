"""The task admin: pages, filters, actions, permissions, LogEntry, escaping, broken data.

Tasks are seeded through the public API (demo.tasks) and driven to their states with the
broker's claim + Ack, as a worker would; only the undecodable payload is a raw write.
"""

from __future__ import annotations

import re
import time
from datetime import date, timedelta

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse

from demo.tasks import flaky, record
from django_bgtasks import cancel_task
from django_bgtasks.admin_views.charts import history_chart, nice_ceiling
from django_bgtasks.broker import get_broker
from django_bgtasks.info import STATES
from django_bgtasks.models import Task
from django_bgtasks.ops.inspect import DayStats, Inspector
from helpers import drive, free_port, seed_blocked, seed_expired, seed_waiting

pytestmark = pytest.mark.django_db

HOUR_MS = 3_600_000
ACTION = "/admin/django_bgtasks/task/action/"
DASHBOARD = "/admin/django_bgtasks/task/"


# -- seeding --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def enqueue_at_once(bgtasks_redis, settings):
    # Each test runs inside a transaction that never commits: enqueue must not wait for it.
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


def enqueue(n: int, queue: str = "default", *args, **kwargs) -> list[str]:
    task = record.using(queue_name=queue)
    return [task.enqueue(*(args or (f"token-{i}",)), **kwargs).id for i in range(n)]


def dead(n: int, queue: str = "default", *args, error: str = "ValueError: boom") -> list[str]:
    ids = enqueue(n, queue, *args)
    drive(ids, "dead", queue, error=error, traceback=f"Traceback (most recent call last):\n{error}")
    return ids


def one_of_each(queue: str = "default") -> dict[str, str]:
    """One task in every state of ``queue``: {state: id}."""
    expired = seed_expired(queue)
    [ids_dead] = dead(1, queue)
    [retry] = enqueue(1, queue)
    drive([retry], "retry", queue, delay_ms=HOUR_MS, error="RuntimeError: later")
    [done] = enqueue(1, queue)
    drive([done], "done", queue, result='{"answer": 42}', result_ttl_ms=HOUR_MS)
    [active] = enqueue(1, queue)
    drive([active], None, queue)
    waiting = seed_waiting(queue)
    [pending] = enqueue(1, queue)
    [scheduled] = [record.using(queue_name=queue, run_after=3600).enqueue("later").id]
    cancelled = cancel_task(record.using(queue_name=queue, run_after=3600).enqueue("no").id,
                            by="seeder").id
    blocked = seed_blocked(queue, after=scheduled)
    return {"pending": pending, "waiting": waiting, "blocked": blocked, "active": active,
            "scheduled": scheduled, "retry": retry, "dead": ids_dead, "completed": done,
            "cancelled": cancelled, "expired": expired}


def counts(queue: str = "default") -> dict[str, int]:
    return get_broker().counts(queue)


# -- users ----------------------------------------------------------------------------------


def make_user(name: str, *perms: str, staff: bool = True) -> User:
    user = User.objects.create_user(name, is_staff=staff)  # no password: no slow hashing
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="django_bgtasks", codename__in=[f"{p}_task" for p in perms]))
    return user


def login(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_():
    return login(User.objects.create_superuser("root", "root@example.com", None))


@pytest.fixture
def viewer():
    return login(make_user("viewer", "view"))


@pytest.fixture
def changer():
    return login(make_user("changer", "view", "change"))


@pytest.fixture
def deleter():
    return login(make_user("deleter", "view", "delete"))


def list_url(state: str, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/admin/django_bgtasks/task/{state}/" + (f"?{query}" if query else "")


def detail_url(task_id: str) -> str:
    return f"/admin/django_bgtasks/task/{task_id}/change/"


def post_action(client: Client, action: str, confirm: bool = True, **data):
    fields = {"action": action, "next": data.pop("next", DASHBOARD), **data}
    if confirm:
        fields["post"] = "yes"
    return client.post(ACTION, fields)


def selected(ids: list[str], queue: str = "default") -> list[str]:
    return [f"{queue}:{task_id}" for task_id in ids]


def messages_of(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


def entries(**filters) -> list[LogEntry]:
    return list(LogEntry.objects.filter(**filters).order_by("object_id"))


# -- model, registration --------------------------------------------------------------------


def test_permissions_exist_and_admin_index_lists_the_app(admin_client_):
    codenames = set(Permission.objects.filter(content_type__app_label="django_bgtasks")
                    .values_list("codename", flat=True))
    assert codenames == {"view_task", "change_task", "delete_task", "view_periodictask",
                         "change_periodictask"}
    html = admin_client_.get("/admin/").content.decode()
    assert "Background tasks" in html
    assert f'href="{DASHBOARD}"' in html
    assert "/admin/django_bgtasks/task/add/" not in html  # has_add_permission is False


# -- dashboard ------------------------------------------------------------------------------


def test_dashboard_counts_today_chart_and_workers(admin_client_):
    one_of_each("default")
    dead(2, "mail")
    get_broker().heartbeat_worker("host-a:1", {
        "host": "host-a", "pid": "4242", "queues": "default:1,mail:2", "processes": "2",
        "threads": "4", "started": f"{time.time() - 7200:.3f}", "in_flight": "3"}, ttl=30)

    response = admin_client_.get(DASHBOARD)

    assert response.status_code == 200
    rows = {r["stats"].name: [count for count, _ in r["cells"]] for r in response.context["rows"]}
    assert rows == {"default": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                    "mail": [0, 0, 0, 0, 0, 0, 2, 0, 0, 0]}
    html = response.content.decode()
    assert f'href="{list_url("dead", queue="mail")}">2</a>' in html
    assert f'href="{list_url("retry")}">1</a>' in html  # the all-queues row
    # today: default acked dead, retry, done and seed_waiting's first run (4 processed, 2
    # failed); mail 2 dead
    assert response.context["processed_today"] == 6
    assert response.context["failed_today"] == 4
    assert html.count("<svg") >= 1 and "processed</title>" in html
    for text in ("host-a", "4242", "default:1,mail:2", "2 × 4"):
        assert text in html
    assert re.search(r"\(2\shours ago\)", html)  # timesince separates with a no-break space
    assert re.search(r'<td class="num">3</td>\s*</tr>', html)  # in flight


def test_dashboard_shows_no_worker_and_no_queue_when_empty(admin_client_):
    html = admin_client_.get(DASHBOARD).content.decode()
    assert "No task has been enqueued yet." in html
    assert "No worker is running" in html


# -- lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("queue", ["default", None])
def test_each_state_lists_its_tasks_for_one_queue_or_all(admin_client_, state, queue):
    ids = one_of_each("default")
    mail = one_of_each("mail")

    response = admin_client_.get(list_url(state, **({"queue": queue} if queue else {})))

    assert response.status_code == 200
    listed = [row.info.id for row in response.context["rows"]]
    expected = [ids[state]] if queue else [ids[state], mail[state]]
    assert sorted(listed) == sorted(expected)
    html = response.content.decode()
    for task_id in expected:
        assert f'href="{detail_url(task_id)}?queue=' in html
    assert response.context["when_label"] in html


def test_list_columns_args_attempts_time_and_error(admin_client_):
    [task_id] = dead(1, "default", "x" * 200, error="KeyError: 'missing'\nsecond line")
    html = admin_client_.get(list_url("dead", queue="default")).content.decode()
    row = html[html.index(f'value="default:{task_id}"'):]
    row = row[:row.index("</tr>")]
    assert "x" * 70 in row and "x" * 90 not in row  # shortened to ~80 characters
    assert "1/26" in row  # attempts / max (max_retries 25, so 26 runs)
    error_cell = re.search(r'<td class="error" title="[^"]*">([^<]*)</td>', row).group(1)
    assert error_cell == "KeyError: &#x27;missing&#x27;"  # first line only
    assert "now" in row and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row)


def test_list_relative_time_in_the_future(admin_client_):
    record.using(run_after=timedelta(minutes=30)).enqueue("soon")
    html = admin_client_.get(list_url("scheduled")).content.decode()
    assert re.search(r"in (29|30)\sminutes", html)


def test_pagination_120_dead_tasks_in_pages_of_50(admin_client_):
    ids = dead(120)
    first = admin_client_.get(list_url("dead", queue="default"))
    last = admin_client_.get(list_url("dead", queue="default", page=3))

    assert first.context["page"].paginator.num_pages == 3
    assert len(first.context["rows"]) == 50
    assert len(last.context["rows"]) == 20
    assert last.content.decode().count('name="_selected_action"') == 20
    on_first = {r.info.id for r in first.context["rows"]}
    on_last = {r.info.id for r in last.context["rows"]}
    assert on_last == set(ids[:20])  # newest first: the last page holds the oldest
    assert not on_first & on_last
    page_2 = 'href="/admin/django_bgtasks/task/dead/?queue=default&amp;page=2"'
    assert page_2 in first.content.decode()
    assert '<span class="this-page">3</span>' in last.content.decode()


def test_name_filter_and_partial_scan(admin_client_, monkeypatch):
    from demo.tasks import add

    add_ids = [add.enqueue(i, i).id for i in range(3)]
    enqueue(9)

    response = admin_client_.get(list_url("pending", name="ADD"))
    assert sorted(r.info.id for r in response.context["rows"]) == sorted(add_ids)
    assert "Partial search" not in response.content.decode()

    monkeypatch.setattr("django_bgtasks.ops.inspect.BATCH", 4)
    monkeypatch.setattr("django_bgtasks.ops.inspect.NAME_SCAN_LIMIT", 4)
    html = admin_client_.get(list_url("pending", name="record")).content.decode()
    assert "Partial search" in html and "first 4 of 12 pending tasks" in html


def test_id_lookup_redirects_or_says_not_found(admin_client_):
    [task_id] = dead(1, "mail")
    response = admin_client_.get(list_url("pending", id=task_id))
    assert response.status_code == 302
    assert response["Location"] == f"{detail_url(task_id)}?queue=mail"

    response = admin_client_.get(list_url("dead", id="nope"))
    assert response.status_code == 200
    assert "No task with id “nope”." in messages_of(response)


def test_unknown_state_is_404_and_bad_queue_is_400(admin_client_):
    assert admin_client_.get(list_url("lost")).status_code == 404
    assert admin_client_.get(list_url("dead", queue="a{b}")).status_code == 400


# -- detail ---------------------------------------------------------------------------------


def test_detail_of_a_dead_task_shows_fields_json_traceback_and_attempts(admin_client_):
    task_id = flaky.enqueue("alpha", failures={"n": 1}).id
    drive([task_id], "retry", delay_ms=0, error="RuntimeError: first", traceback="TB-1")
    get_broker().requeue("default", [task_id])
    drive([task_id], "dead", error="RuntimeError: second", traceback="TB-2\n  line 2")

    response = admin_client_.get(detail_url(task_id))

    assert response.status_code == 200
    html = response.content.decode()
    for text in (task_id, "demo.tasks.flaky", "<strong>dead</strong>",
                 "2 of at most 26", "RuntimeError: second", "TB-2\n  line 2"):
        assert text in html
    assert '[\n  &quot;alpha&quot;\n]' in html  # args as pretty JSON
    assert '&quot;failures&quot;: {\n    &quot;n&quot;: 1' in html
    attempts = response.context["attempts"]
    assert [(a["attempt"], a["error"]) for a in attempts] == [
        (1, "RuntimeError: first"), (2, "RuntimeError: second")]
    assert html.count("TB-2\n  line 2") == 2  # the last failure's, and in its attempt row
    assert "TB-1" in html  # the first attempt's own traceback
    assert 'value="requeue">Run now' in html and 'value="delete">Delete' in html


def test_detail_shows_the_expiry_and_the_expired_state(admin_client_):
    pending = record.using(expires=timedelta(hours=1)).enqueue("x").id
    html = admin_client_.get(detail_url(pending)).content.decode()
    assert re.search(r'<th scope="row">Expires at</th><td>\d{4}-\d\d-\d\d', html)
    expired = seed_expired("mail")
    html = admin_client_.get(detail_url(expired)).content.decode()
    assert "<strong>expired</strong>" in html and "2001-01-01 00:00:00" in html
    assert "Expires at" not in admin_client_.get(
        detail_url(record.enqueue("y").id)).content.decode()


def test_detail_of_completed_shows_result_and_active_can_only_be_cancelled(admin_client_):
    ids = one_of_each()
    html = admin_client_.get(detail_url(ids["completed"])).content.decode()
    assert "&quot;answer&quot;: 42" in html
    assert "Run now" not in html and 'value="delete"' in html

    html = admin_client_.get(detail_url(ids["active"])).content.decode()
    assert re.findall(r'name="action" value="(\w+)"', html) == ["cancel"]  # nothing else


def test_detail_of_a_missing_task_goes_back_to_the_dashboard(admin_client_):
    response = admin_client_.get(detail_url("ghost"))
    assert response.status_code == 302 and response["Location"] == DASHBOARD


# -- actions --------------------------------------------------------------------------------


def test_bulk_run_now_confirms_then_moves_and_logs(admin_client_):
    ids = dead(3)
    back = list_url("dead", queue="default")

    confirm = post_action(admin_client_, "requeue", confirm=False,
                          _selected_action=selected(ids[:2]), next=back)
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Are you sure you want to run the 2 selected tasks now?" in html
    assert ids[0] in html and ids[1] in html and ids[2] not in html
    assert counts()["dead"] == 3  # nothing done yet

    done = post_action(admin_client_, "requeue", _selected_action=selected(ids[:2]), next=back)

    assert done.status_code == 302 and done["Location"] == back
    assert (counts()["pending"], counts()["dead"]) == (2, 1)
    assert "2 tasks moved to pending" in messages_of(done)
    logged = entries(action_flag=CHANGE)
    assert sorted(e.object_id for e in logged) == sorted(ids[:2])
    for entry in logged:
        assert entry.user.username == "root"
        assert entry.change_message == "Ran now from dead"
        assert entry.content_type == ContentType.objects.get_for_model(Task)
        assert entry.object_repr == f"demo.tasks.record ({entry.object_id})"
        assert entry.get_admin_url() == detail_url(entry.object_id)


def test_bulk_delete_confirms_then_deletes_and_logs(admin_client_):
    ids = dead(2)
    confirm = post_action(admin_client_, "delete", confirm=False, _selected_action=selected(ids))
    assert "Are you sure you want to delete the 2 selected tasks?" in confirm.content.decode()

    done = post_action(admin_client_, "delete", _selected_action=selected(ids))

    assert done.status_code == 302
    inspector = Inspector(get_broker())
    assert [inspector.get(i) for i in ids] == [None, None]
    assert "2 tasks deleted" in messages_of(done)
    assert [(e.object_id, e.change_message) for e in entries(action_flag=DELETION)] == sorted(
        (i, "Deleted") for i in ids)


def test_run_now_from_the_detail_page_acts_at_once(admin_client_):
    ids = one_of_each()
    for state in ("scheduled", "retry"):
        response = post_action(admin_client_, "requeue", _selected_action=selected(
            [ids[state]]), next=detail_url(ids[state]))
        assert response["Location"] == detail_url(ids[state])
    assert counts()["pending"] == 3
    assert {e.change_message for e in entries()} == {"Ran now from scheduled",
                                                     "Ran now from retry"}


def test_running_tasks_are_not_deleted_and_nothing_selected_is_a_warning(admin_client_):
    ids = one_of_each()
    response = post_action(admin_client_, "delete", _selected_action=selected(
        [ids["active"], ids["pending"]]))
    assert "1 task deleted" in messages_of(response)
    assert any("running, so not deleted" in m for m in messages_of(response))
    assert counts()["active"] == 1 and counts()["pending"] == 0

    response = post_action(admin_client_, "requeue")
    assert any("Items must be selected" in m for m in messages_of(response))
    response = post_action(admin_client_, "requeue", _selected_action=selected(["gone"]))
    assert "None of the selected tasks exists any more." in messages_of(response)


def test_run_all_buttons_show_for_one_queue_and_say_how_many(admin_client_):
    dead(3)
    html = admin_client_.get(list_url("dead", queue="default")).content.decode()
    assert 'value="requeue_all">Run all 3 dead tasks of default now' in html
    assert 'value="delete_all">Delete all 3 dead tasks of default' in html
    assert "requeue_all" not in admin_client_.get(list_url("dead")).content.decode()
    assert "requeue_all" not in admin_client_.get(
        list_url("pending", queue="default")).content.decode()


def test_run_all_refuses_a_state_it_cannot_run(admin_client_):
    response = post_action(admin_client_, "requeue_all", queue="default", state="pending")
    assert response.status_code == 400
    response = post_action(admin_client_, "delete_all", queue="default", state="active")
    assert response.status_code == 400


def test_pause_and_resume_toggle_the_flag_and_the_dashboard(admin_client_):
    dead(1, "mail")
    inspector = Inspector(get_broker())

    response = post_action(admin_client_, "pause", confirm=False, queue="mail")
    assert response.status_code == 302
    assert [s.paused for s in inspector.stats(["mail"])] == [True]
    html = admin_client_.get(DASHBOARD).content.decode()
    assert "Paused</strong>" in html and 'value="resume">Resume' in html

    post_action(admin_client_, "resume", confirm=False, queue="mail")
    assert [s.paused for s in inspector.stats(["mail"])] == [False]
    html = admin_client_.get(DASHBOARD).content.decode()
    assert "Paused</strong>" not in html and 'value="pause">Pause' in html
    assert [e.change_message for e in LogEntry.objects.order_by("pk")] == [
        "Paused queue mail", "Resumed queue mail"]


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_selected_confirms_then_cancels_asks_and_logs(admin_client_):
    ids = one_of_each()
    chosen = [ids[s] for s in ("pending", "scheduled", "retry", "waiting", "active", "dead")]
    confirm = post_action(admin_client_, "cancel", confirm=False,
                          _selected_action=selected(chosen))
    assert "Are you sure you want to cancel the 6 selected tasks?" in confirm.content.decode()
    assert counts()["cancelled"] == 1  # the seeded one: nothing done yet

    done = post_action(admin_client_, "cancel", _selected_action=selected(chosen))

    assert done.status_code == 302
    assert (counts()["cancelled"], counts()["active"], counts()["dead"]) == (5, 1, 1)
    assert messages_of(done) == [
        "4 tasks cancelled; 1 running task asked to stop (its worker ends it).",
        "1 of the selected tasks had already ended, so were left as they were."]
    assert sorted((e.object_id, e.action_flag, e.change_message) for e in entries()) == sorted(
        [(ids[s], CHANGE, "Cancelled") for s in ("pending", "scheduled", "retry", "waiting")]
        + [(ids["active"], CHANGE, "Asked to stop (cancel requested)")])
    assert {e.user.username for e in entries()} == {"root"}
    info = Inspector(get_broker()).get(ids["pending"])
    assert (info.state, info.cancelled_by) == ("cancelled", "root")


def test_the_lists_offer_cancel_for_queued_and_running_states_only(admin_client_):
    one_of_each()
    for state in ("pending", "waiting", "active", "scheduled", "retry"):
        html = admin_client_.get(list_url(state, queue="default")).content.decode()
        assert '<option value="cancel">Cancel selected tasks</option>' in html, state
        assert f'value="cancel_all">Cancel all 1 {state} tasks of default' in html, state
    for state in ("dead", "completed", "cancelled"):
        html = admin_client_.get(list_url(state, queue="default")).content.decode()
        assert 'value="cancel"' not in html and "cancel_all" not in html, state
    assert "cancel_all" not in admin_client_.get(list_url("pending")).content.decode()
    response = post_action(admin_client_, "cancel_all", queue="default", state="dead")
    assert response.status_code == 400


def test_the_detail_page_cancels_and_shows_who_and_when(admin_client_):
    ids = one_of_each()
    page = detail_url(ids["scheduled"])
    assert 'value="cancel">Cancel…' in admin_client_.get(page).content.decode()

    post_action(admin_client_, "cancel", _selected_action=selected([ids["scheduled"]]),
                next=page)
    post_action(admin_client_, "cancel", _selected_action=selected([ids["active"]]))

    html = admin_client_.get(page).content.decode()
    assert "<strong>cancelled</strong>" in html
    assert re.search(r"Cancelled by root at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", html)
    assert 'value="cancel"' not in html  # ended: nothing to cancel
    html = admin_client_.get(detail_url(ids["active"])).content.decode()
    assert "<strong>active</strong>" in html and "Cancel requested by root at" in html
    assert 'value="cancel"' not in html  # asked already


def test_cancel_needs_the_change_permission_post_and_csrf(viewer, deleter, changer):
    ids = one_of_each()
    for client in (viewer, deleter):
        html = client.get(list_url("pending", queue="default")).content.decode()
        assert 'value="cancel"' not in html and "cancel_all" not in html
        assert 'value="cancel"' not in client.get(detail_url(ids["pending"])).content.decode()
        for action, extra in [("cancel", {"_selected_action": selected([ids["pending"]])}),
                              ("cancel_all", {"queue": "default", "state": "pending"})]:
            assert post_action(client, action, **extra).status_code == 403
    assert admin_client_get_405(changer, ids["pending"])
    csrf = login(make_user("csrf", "view", "change"), enforce_csrf_checks=True)
    assert post_action(csrf, "cancel", _selected_action=selected([ids["pending"]])
                       ).status_code == 403
    assert counts()["pending"] == 1 and LogEntry.objects.count() == 0
    assert post_action(changer, "cancel", _selected_action=selected([ids["pending"]])
                       ).status_code == 302
    assert counts()["pending"] == 0 and LogEntry.objects.count() == 1


def admin_client_get_405(client, task_id: str) -> bool:
    response = client.get(ACTION, {"action": "cancel", "_selected_action": f"default:{task_id}",
                                   "post": "yes"})
    return response.status_code == 405


def test_who_cancelled_is_shown_as_text(admin_client_):
    task_id = record.using(run_after=3600).enqueue("x").id
    cancel_task(task_id, by="<script>alert(1)</script>")
    html = admin_client_.get(detail_url(task_id)).content.decode()
    assert "<script>alert(1)" not in html
    assert "Cancelled by &lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- permissions ----------------------------------------------------------------------------


def test_view_only_staff_sees_pages_without_buttons_and_gets_403_on_post(viewer):
    ids = one_of_each()
    for url in (DASHBOARD, list_url("dead"), list_url("dead", queue="default"),
                detail_url(ids["dead"])):
        response = viewer.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'name="action"' not in html and "_selected_action" not in html
        assert "Pause" not in html
    for action, extra in [("requeue", {"_selected_action": selected([ids["dead"]])}),
                          ("delete", {"_selected_action": selected([ids["dead"]])}),
                          ("requeue_all", {"queue": "default", "state": "dead"}),
                          ("delete_all", {"queue": "default", "state": "dead"}),
                          ("pause", {"queue": "default"})]:
        assert post_action(viewer, action, **extra).status_code == 403
    assert counts()["dead"] == 1 and not Inspector(get_broker()).stats()[0].paused
    assert LogEntry.objects.count() == 0


def test_change_permission_runs_now_but_cannot_delete(changer):
    ids = dead(2)
    html = changer.get(list_url("dead", queue="default")).content.decode()
    assert 'value="requeue"' in html and 'value="delete"' not in html
    assert "requeue_all" in html and "delete_all" not in html

    assert post_action(changer, "delete", _selected_action=selected(ids)).status_code == 403
    assert post_action(changer, "delete_all", queue="default", state="dead").status_code == 403
    assert counts()["dead"] == 2
    assert post_action(changer, "requeue", _selected_action=selected(ids)).status_code == 302
    assert counts()["pending"] == 2
    assert post_action(changer, "pause", queue="default").status_code == 302


def test_delete_permission_deletes_but_cannot_run_now_or_pause(deleter):
    ids = dead(2)
    html = deleter.get(list_url("dead", queue="default")).content.decode()
    assert 'value="delete"' in html and 'value="requeue"' not in html
    assert "Pause" not in deleter.get(DASHBOARD).content.decode()

    assert post_action(deleter, "requeue", _selected_action=selected(ids)).status_code == 403
    assert post_action(deleter, "pause", queue="default").status_code == 403
    assert post_action(deleter, "delete", _selected_action=selected(ids)).status_code == 302
    assert counts()["dead"] == 0


def test_staff_without_any_task_permission_gets_403():
    client = login(make_user("nobody"))
    assert client.get(DASHBOARD).status_code == 403
    assert client.get(list_url("dead")).status_code == 403


@pytest.mark.parametrize("who", ["non-staff", "anonymous"])
def test_non_staff_and_anonymous_are_sent_to_the_login_page(who):
    ids = dead(1)
    client = login(make_user("plain", "view", "change", "delete", staff=False)) \
        if who == "non-staff" else Client()
    for url in (DASHBOARD, list_url("dead"), detail_url(ids[0])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{reverse('admin:login')}?next=")
    response = post_action(client, "delete", _selected_action=selected(ids))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert counts()["dead"] == 1


def test_actions_are_post_only(admin_client_):
    assert admin_client_.get(ACTION, {"action": "pause", "queue": "default"}).status_code == 405
    assert not Inspector(get_broker()).stats(["default"])[0].paused


def test_actions_need_the_csrf_token():
    ids = dead(1)
    client = login(User.objects.create_superuser("root", "root@example.com", None),
                   enforce_csrf_checks=True)
    response = post_action(client, "requeue", _selected_action=selected(ids))
    assert response.status_code == 403
    assert counts()["dead"] == 1

    page = client.get(list_url("dead", queue="default"))  # the form's token works
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"',
                      page.content.decode()).group(1)
    response = post_action(client, "requeue", _selected_action=selected(ids),
                           csrfmiddlewaretoken=token)
    assert response.status_code == 302 and counts()["pending"] == 1


# -- escaping, broken data, Redis down ------------------------------------------------------


def test_script_in_arguments_and_errors_is_shown_as_text(admin_client_):
    [task_id] = dead(1, "default", "<script>alert(1)</script>",
                     error="<script>alert(2)</script>")
    for url in (list_url("dead"), detail_url(task_id)):
        html = admin_client_.get(url).content.decode()
        assert "<script>alert(" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    confirm = post_action(admin_client_, "delete", confirm=False,
                          _selected_action=selected([task_id])).content.decode()
    assert "<script>alert(" not in confirm


def test_detail_shows_the_headers_escaped_apart_from_the_arguments(admin_client_):
    task_id = record.using(headers={"<b>tenant</b>": "<script>alert(3)</script>"}).enqueue(
        "x").id
    html = admin_client_.get(detail_url(task_id)).content.decode()
    headers = html[html.index("<h2>Headers</h2>"):]
    headers = headers[:headers.index("</div>")]
    assert ('<th scope="row"><code>&lt;b&gt;tenant&lt;/b&gt;</code></th>'
            '<td><code>&lt;script&gt;alert(3)&lt;/script&gt;</code></td>') in headers
    assert "<script>alert(" not in html and "tenant" not in html[:html.index("<h2>Headers")]
    assert "<h2>Headers</h2>" not in admin_client_.get(
        detail_url(record.enqueue("y").id)).content.decode()


def test_undecodable_payload_renders_a_placeholder(admin_client_, bgtasks_redis):
    [task_id] = dead(1)
    with bgtasks_redis.client() as raw:
        raw.hset(get_broker().queue_keys("default").msg, task_id, b"\x80\x81not json{<b>")

    listed = admin_client_.get(list_url("dead", queue="default"))
    assert listed.status_code == 200
    html = listed.content.decode()
    assert "undecodable message" in html and "&lt;undecodable message&gt;" in html
    detail = admin_client_.get(detail_url(task_id))
    assert detail.status_code == 200
    html = detail.content.decode()
    assert "cannot be decoded" in html
    assert "x80" in html and "not json{&lt;b&gt;" in html  # the raw bytes, escaped
    assert 'value="delete"' in html  # and it can still be deleted
    post_action(admin_client_, "delete", _selected_action=selected([task_id]))
    assert counts()["dead"] == 0


def test_redis_unreachable_shows_an_error_page(admin_client_, settings):
    [task_id] = dead(1)
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    for url in (DASHBOARD, list_url("dead"), detail_url(task_id)):
        response = admin_client_.get(url)
        assert response.status_code == 503
        assert "cannot reach Redis" in response.content.decode()
    response = post_action(admin_client_, "pause", queue="default")
    assert response.status_code == 503


# -- chart ----------------------------------------------------------------------------------


def test_history_chart_is_escaped_svg_with_a_bar_per_day_and_kind():
    days = [DayStats(date(2024, 5, 1) + timedelta(days=n), n * 10, n) for n in range(14)]
    svg = str(history_chart(days))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<rect") == 14 * 2 + 2  # bars, plus the legend's two swatches
    assert "<title>2024-05-14: 130 processed</title>" in svg
    assert "<title>2024-05-14: 13 failed</title>" in svg
    assert ">200</text>" in svg  # the axis top: 130 rounded up to 200
    assert "05-14</text>" in svg  # today's label
    assert "<script" not in svg
    assert str(history_chart([])).endswith("</svg>")


@pytest.mark.parametrize("value,top", [(0, 1), (1, 1), (3, 5), (7, 10), (130, 200),
                                       (1001, 2000)])
def test_nice_ceiling(value, top):
    assert nice_ceiling(value) == top
