"""The periodic task admin: the list and an entry's page (next runs, last run, badges,
history), the actions (disable, enable, run now) with their permissions, CSRF, LogEntry
rows and the run-now nonce, escaping, declaration problems, Redis down.

Entries are declared in settings; a scheduler pass (the worker's own PeriodicScheduler) moves
them as a runbackground host would, and the broker's claim starts a task as a worker would.
"""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse

from django_bgtasks.admin_views.periodic import seconds
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack
from django_bgtasks.models import PeriodicTask
from django_bgtasks.periodic import entries
from django_bgtasks.periodic.status import PeriodicEntries
from django_bgtasks.worker.periodic import PeriodicScheduler
from helpers import counts, free_port, wait_until

pytestmark = pytest.mark.django_db

LIST = "/admin/django_bgtasks/periodictask/"
ACTION = "/admin/django_bgtasks/periodictask/action/"
SECOND_ENTRY = {"name": "second", "task": "demo.tasks.record_tick", "every": 1,
                "args": ["second"]}
NIGHTLY_ENTRY = {"name": "nightly", "task": "demo.tasks.record_tick", "cron": "30 2 * * *",
                 "tz": "America/New_York", "args": ["nightly"], "kwargs": {"b": [1, 2]},
                 "catch_up": "all", "max_lateness": 90, "overlap": "skip"}
XSS_NAME = "<script>alert(1)</script>"
XSS_ARG = "<img src=x onerror=alert(2)>"
LATENESS = r"\d[\d,.]* m?s"  # as admin_views.periodic.seconds() writes it


# -- seeding --------------------------------------------------------------------------------


def declare(settings, *specs: dict) -> None:
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": list(specs)}


@pytest.fixture
def declared(settings):
    declare(settings, SECOND_ENTRY, NIGHTLY_ENTRY)


def scheduler_pass() -> None:
    """One pass of a runbackground host's scheduler over the declared entries."""
    PeriodicScheduler(get_broker(), entries()[0]).tick()


def fire(name: str = "second") -> str:
    """Let the schedulers see the (1-second) entry, then fire its next tick: its task id."""
    scheduler_pass()

    def fired():
        scheduler_pass()
        return [h for h in get_broker().periodic_history("default", name)
                if h["outcome"] == "fired"]
    return wait_until(fired, timeout=5, message=f"{name} fires a tick")[0]["id"]


def start(task_id: str) -> None:
    """Claim the (only pending) task, as a worker does: it becomes active, started now."""
    claimed = get_broker().claim("default", "test-host", [], 1, 60_000, 100_000, 10**12)
    assert [c.id for c in claimed.claimed] == [task_id]


def history(name: str) -> list[str]:
    return [h["outcome"] for h in get_broker().periodic_history("default", name)]


# -- users ----------------------------------------------------------------------------------


def login(name: str, *perms: str, staff: bool = True, **kwargs) -> Client:
    """A user with these django_bgtasks codenames ("view_periodictask"...), logged in."""
    user = User.objects.create_user(name, is_staff=staff)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="django_bgtasks", codename__in=perms))
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def root():
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client


@pytest.fixture
def viewer():
    return login("viewer", "view_periodictask")


@pytest.fixture
def changer():
    return login("changer", "view_periodictask", "change_periodictask")


def detail(name: str) -> str:
    return reverse("admin:django_bgtasks_periodictask_change", args=[quote(name)])


def task_page(task_id: str) -> str:
    return reverse("admin:django_bgtasks_task_change", args=[quote(task_id)])


def post(client: Client, action: str, name: str, **data):
    return client.post(ACTION, {"action": action, "name": name, "next": data.pop("next", LIST),
                                **data})


def run_now(client: Client, name: str, nonce: str = "form-nonce-1", **data):
    return post(client, "run_now", name, request_id=nonce, **data)


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response
    return response.content.decode()


def log_entries() -> list[tuple[str, str]]:
    kind = ContentType.objects.get_for_model(PeriodicTask)
    return [(e.object_id, e.change_message)
            for e in LogEntry.objects.filter(content_type=kind, action_flag=CHANGE)
            .order_by("pk")]


# -- model, registration --------------------------------------------------------------------


def test_own_permissions_and_links_from_the_index_and_the_dashboard(root):
    codenames = set(Permission.objects.filter(content_type__model="periodictask")
                    .values_list("codename", flat=True))
    assert codenames == {"view_periodictask", "change_periodictask"}
    index = page(root, "/admin/")
    assert "Periodic tasks" in index and f'href="{LIST}"' in index
    assert f"{LIST}add/" not in index
    assert f'href="{LIST}">Periodic tasks</a>' in page(root, "/admin/django_bgtasks/task/")
    # a user who may not see the periodic tasks gets no link to them
    tasks_only = login("tasks-only", "view_task")
    assert LIST not in page(tasks_only, "/admin/django_bgtasks/task/")


# -- the list -------------------------------------------------------------------------------


def test_new_entries_show_schedule_next_runs_in_their_time_zone_and_the_new_badge(root,
                                                                                   declared):
    html = page(root, LIST)
    assert html.count("not yet seen by any scheduler: is runbackground running?") == 2
    assert f'href="{detail("nightly")}">nightly</a>' in html
    assert "At 02:30 every day" in html  # the schedule in words
    assert "<code>30 2 * * *</code>" in html and "America/New_York" in html
    # three next runs, at 02:30 New York time (03:00 on a spring-forward day), UTC on hover
    local = re.findall(r">\d{4}-\d\d-\d\d (0[23]:[03]0):00 (E[SD]T)</time>", html)
    assert len(local) == 3, local
    assert len(re.findall(r'title="\d{4}-\d\d-\d\d 0[67]:[03]0:00 UTC"', html)) == 3
    assert len(re.findall(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", html)) >= 3
    assert len(re.findall(r"<td>never\s*</td>", html)) == 2  # no last run yet
    assert html.count('value="run_now"') == 2 and html.count('value="disable"') == 2
    assert "Nothing yet: no scheduler has seen this entry." in page(root, detail("nightly"))

    scheduler_pass()  # a host has seen them: no badge
    assert "not yet seen" not in page(root, LIST)


def test_last_run_shows_tick_enqueue_and_start_lateness_and_links_the_task(root, declared):
    task_id = fire()
    html = page(root, LIST)
    assert re.search(rf"enqueued {LATENESS} after the tick; started —", html)
    assert f'href="{task_page(task_id)}?queue=default">pending</a>' in html

    time.sleep(0.05)
    start(task_id)
    html = page(root, LIST)
    assert re.search(rf"started {LATENESS} after it", html)
    assert f'href="{task_page(task_id)}?queue=default">active</a>' in html
    # the task's own page opens from that link
    assert task_id in page(root, f"{task_page(task_id)}?queue=default")


def test_a_user_who_may_not_see_tasks_gets_no_link_to_them(declared):
    task_id = fire()
    html = page(login("periodic-only", "view_periodictask"), LIST)
    assert re.search(r"<br>\s*pending\s*</td>", html) and task_page(task_id) not in html


def test_overdue_and_changed_badges(root, settings, declared, raw):
    scheduler_pass()
    broker = get_broker()
    state = broker.periodic_states("default")["second"]
    # As if every scheduler had been down for 3 minutes: the mark lags behind.
    mark = state["last"] - 180_000
    raw.hset(broker.queue_keys("default").cron, "second",
             f'{{"last":{mark},"spec":"{state["spec"]}","enabled":true,"task":""}}')
    for html in (page(root, LIST), page(root, detail("second"))):
        assert "overdue: not fired since" in html
        assert "is past due" in html

    declare(settings, {**SECOND_ENTRY, "every": 2}, NIGHTLY_ENTRY)
    html = page(root, LIST)
    assert "schedule changed; waiting for the schedulers" in html
    assert "overdue" not in html


def test_no_entry_explains_how_to_declare_one(root, settings):
    declare(settings)
    html = page(root, LIST)
    assert "No periodic task is declared" in html
    assert "@periodic_task" in html and 'BGTASKS["PERIODIC"]' in html


def test_declaration_problems_are_error_messages_above_the_valid_entries(root, settings):
    declare(settings, SECOND_ENTRY,
            {"name": "bad-spec", "task": "demo.tasks.record_tick", "cron": "61 * * * *"},
            {"name": "ghost", "task": "demo.tasks.nope", "every": 60})
    html = page(root, LIST)
    errors = re.findall(r'<li class="error">(.*?)</li>', html, re.S)
    assert len(errors) == 2
    assert "&#x27;bad-spec&#x27;" in errors[0] and "demo.tasks.nope" in errors[1]
    assert f'href="{detail("second")}">second</a>' in html


# -- an entry's page --------------------------------------------------------------------------


def test_detail_shows_options_arguments_and_history_with_task_links(root, declared):
    task_id = fire()
    run_now(root, "second", "detail-nonce-1")
    html = page(root, detail("second"))
    assert "Periodic task second" in html and "every second" in html
    for outcome in ("run now", "fired", "started"):
        assert f"<td>{outcome}</td>" in html
    assert f'href="{task_page(task_id)}?queue=default">{task_id}</a>' in html
    assert "cron:second:now:detail-nonce-1" in html
    assert re.search(rf"<td>{LATENESS}</td>\s*<td>fired</td>", html)

    html = page(root, detail("nightly"))
    assert "<td>all</td>" in html and "<td>skip</td>" in html and "<td>90.0 s</td>" in html
    assert '<pre>[\n  &quot;nightly&quot;\n]</pre>' in html
    assert '<pre>{\n  &quot;b&quot;: [\n    1,\n    2\n  ]\n}</pre>' in html


def test_an_unknown_entry_goes_back_to_the_list(root, declared):
    response = root.get(detail("gone"))
    assert response.status_code == 302 and response["Location"] == LIST
    assert "No periodic task named “gone”" in page(root, LIST)


# -- actions --------------------------------------------------------------------------------


def test_disable_and_enable_switch_the_entry_and_write_log_entries(changer, declared):
    scheduler_pass()
    back = detail("second")
    response = post(changer, "disable", "second", next=back)
    assert response.status_code == 302 and response["Location"] == back
    assert PeriodicEntries().status("second").enabled is False
    html = page(changer, back)
    assert "Periodic task second disabled" in html and 'value="enable">Enable' in html
    assert "none while disabled" in html

    post(changer, "disable", "second")  # a second click changes nothing, logs nothing
    assert "was already disabled" in page(changer, LIST)
    post(changer, "enable", "second")
    assert PeriodicEntries().status("second").enabled is True
    assert history("second")[:3] == ["enabled", "disabled", "started"]
    assert log_entries() == [("second", "Disabled"), ("second", "Enabled")]
    # the admin's history links open the entry's page
    [first, _] = LogEntry.objects.order_by("pk")
    assert first.get_admin_url() == back
    assert first.user.username == "changer" and str(first) == "Changed “second” — Disabled"


def test_run_now_enqueues_one_task_and_a_resent_form_no_other(changer, declared):
    html = page(changer, LIST)
    nonces = re.findall(r'name="request_id" value="([0-9a-f]{32})"', html)
    assert len(set(nonces)) == 2  # one per form, fresh on each render

    response = run_now(changer, "second", nonces[0])
    assert response.status_code == 302
    task_id = f"cron:second:now:{nonces[0]}"
    assert f"task {task_id} enqueued" in page(changer, LIST)
    assert counts()["pending"] == 1

    run_now(changer, "second", nonces[0])  # the same form, posted again
    assert counts()["pending"] == 1
    assert "already run from this form" in page(changer, LIST)
    assert history("second").count("run now") == 1
    assert log_entries() == [("second", f"Ran now: task {task_id}")]
    assert run_now(changer, "second", "").status_code == 400  # not from our form
    assert run_now(changer, "second", "x" * 65).status_code == 400


def test_a_form_resent_after_its_task_finished_enqueues_no_other(changer, declared):
    run_now(changer, "second", "resent-nonce-1")
    [claimed] = get_broker().claim("default", "test-host", [], 1, 60_000, 100_000,
                                   10**12).claimed
    get_broker().claim("default", "test-host", [Ack(claimed.id, claimed.attempt, "done")], 0,
                       60_000, 100_000, 10**12)  # done, record not kept (the default)
    run_now(changer, "second", "resent-nonce-1")
    assert counts()["pending"] == 0 and history("second").count("run now") == 1


def test_actions_on_an_unknown_entry_or_unknown_actions(changer, declared):
    response = post(changer, "disable", "gone")
    assert response.status_code == 302
    assert "No periodic task named “gone”" in page(changer, LIST)
    assert post(changer, "delete", "second").status_code == 400
    assert log_entries() == []


def test_the_way_back_must_be_ours(changer, declared):
    response = post(changer, "disable", "second", next="https://evil.example/")
    assert response.status_code == 302 and response["Location"] == LIST


# -- permissions, CSRF ------------------------------------------------------------------------


def test_view_only_staff_sees_pages_without_buttons_and_gets_403_on_post(viewer, declared):
    for url in (LIST, detail("second")):
        html = page(viewer, url)
        assert 'name="action"' not in html and "request_id" not in html
        assert "Run now" not in html
    for action in ("disable", "enable", "run_now"):
        assert post(viewer, action, "second", request_id="view-only-1").status_code == 403
    assert counts()["pending"] == 0 and history("second") == []
    assert log_entries() == []


def test_staff_without_the_periodic_permissions_gets_403(declared):
    client = login("tasks-only", "view_task", "change_task")
    assert client.get(LIST).status_code == 403
    assert client.get(detail("second")).status_code == 403
    assert run_now(client, "second").status_code == 403


@pytest.mark.parametrize("who", ["non-staff", "anonymous"])
def test_non_staff_and_anonymous_are_sent_to_the_login_page(who, declared):
    client = (login("plain", "view_periodictask", "change_periodictask", staff=False)
              if who == "non-staff" else Client())
    for response in (client.get(LIST), client.get(detail("second")),
                     run_now(client, "second")):
        assert response.status_code == 302
        assert response["Location"].startswith(f"{reverse('admin:login')}?next=")
    assert counts()["pending"] == 0


def test_actions_are_post_only(root, declared):
    response = root.get(ACTION, {"action": "disable", "name": "second"})
    assert response.status_code == 405
    assert PeriodicEntries().status("second").enabled is True


def test_actions_need_the_csrf_token(declared):
    client = login("csrf", "view_periodictask", "change_periodictask",
                   enforce_csrf_checks=True)
    assert run_now(client, "second").status_code == 403
    assert counts()["pending"] == 0

    html = page(client, LIST)  # the form's own token works
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert run_now(client, "second", csrfmiddlewaretoken=token).status_code == 302
    assert counts()["pending"] == 1


# -- escaping, Redis down, formatting ---------------------------------------------------------


def test_names_and_arguments_that_look_like_markup_are_shown_as_text(root, settings):
    declare(settings, {"name": XSS_NAME, "task": "demo.tasks.record_tick", "every": 60,
                       "args": [XSS_ARG], "kwargs": {XSS_ARG: XSS_NAME}})
    for url in (LIST, detail(XSS_NAME)):
        html = page(root, url)
        assert "<script>alert(" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html  # the detail page's arguments

    response = run_now(root, XSS_NAME, "xss-nonce-1")
    assert response.status_code == 302
    html = page(root, LIST)
    assert "<script>alert(" not in html
    assert f"cron:{XSS_NAME}:now:xss-nonce-1".replace("<", "&lt;").replace(">", "&gt;") in html
    assert log_entries()[0][0] == XSS_NAME
    assert LogEntry.objects.get().get_admin_url() == detail(XSS_NAME)
    assert "<script>alert(" not in page(root, "/admin/")  # the admin's recent actions


def test_redis_unreachable_shows_an_error_page(root, settings, declared):
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    for url in (LIST, detail("second")):
        response = root.get(url)
        assert response.status_code == 503
        assert "cannot reach Redis" in response.content.decode()
    assert run_now(root, "second").status_code == 503


@pytest.mark.parametrize("value,text", [(None, "—"), (0.0042, "4 ms"), (-0.003, "-3 ms"),
                                        (2.54, "2.5 s"), (1250, "1,250.0 s")])
def test_seconds(value, text):
    assert seconds(value) == text
