"""The task and periodic task admins registered on a custom AdminSite, mounted beside
Django's default one (docs/admin.md, "Another admin site"): every page, link, form and
redirect stays on the custom site.

This module is its own URLconf: the default site at /admin/ and an "ops" site at /ops/.
"""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import path

from demo.tasks import record
from django_bgtasks.admin import PeriodicTaskAdmin, TaskAdmin
from django_bgtasks.broker import get_broker
from django_bgtasks.models import PeriodicTask, Task
from helpers import drive


class OpsSite(admin.AdminSite):
    site_header = "Operations"


ops_site = OpsSite(name="ops")
ops_site.register(Task, TaskAdmin)
ops_site.register(PeriodicTask, PeriodicTaskAdmin)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/", ops_site.urls),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

OPS = "/ops/django_bgtasks/"
# Links, form targets and scripts that lead into an admin site
ADMIN_LINK = re.compile(r'(?:href|action|src)="(/(?:admin|ops)/[^"]*)"')


@pytest.fixture
def client(bgtasks_redis, settings) -> Client:
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client


@pytest.fixture
def dead_task() -> str:
    task_id = record.using(queue_name="default").enqueue("to-requeue").id
    drive([task_id], "dead", error="ValueError: boom")
    return task_id


@pytest.fixture
def periodic_entry(settings) -> str:
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": [
        {"name": "ops-hourly", "task": "demo.tasks.record", "every": 3600,
         "args": ["hourly"]}]}
    return "ops-hourly"


def links_of(html: str) -> list[str]:
    return ADMIN_LINK.findall(html)


def assert_stays_on_ops(url: str, html: str) -> None:
    links = links_of(html)
    assert links, f"{url} links nowhere"
    leaving = [link for link in links if not link.startswith("/ops/")]
    assert leaving == [], f"{url} links to the default admin site: {leaving}"


def test_every_page_links_within_the_custom_site(client, dead_task, periodic_entry):
    pages = [OPS + "task/", OPS + "task/dead/", OPS + f"task/{dead_task}/change/?queue=default",
             OPS + "periodictask/", OPS + f"periodictask/{periodic_entry}/change/", "/ops/"]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "Operations" in html, f"{url} is not rendered by the custom site"
        assert_stays_on_ops(url, html)
    dead_list = client.get(OPS + "task/dead/").content.decode()
    assert OPS + f"task/{dead_task}/change/" in dead_list


def test_an_action_on_the_custom_site_acts_and_returns_there(client, dead_task):
    response = client.post(OPS + "task/action/", {
        "action": "requeue", "_selected_action": [f"default:{dead_task}"],
        "next": OPS + "task/dead/", "post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == OPS + "task/dead/"
    assert get_broker().counts("default")["dead"] == 0
    assert LogEntry.objects.filter(object_id=dead_task).count() == 1


def test_a_periodic_run_now_on_the_custom_site(client, periodic_entry):
    page = client.get(OPS + "periodictask/").content.decode()
    nonce = re.search(r'name="request_id" value="([^"]+)"', page).group(1)
    response = client.post(OPS + "periodictask/action/", {
        "action": "run_now", "name": periodic_entry, "request_id": nonce,
        "next": OPS + "periodictask/"})
    assert response.status_code == 302
    assert response["Location"] == OPS + "periodictask/"
    assert get_broker().counts("default")["pending"] == 1
    detail = client.get(OPS + f"periodictask/{periodic_entry}/change/").content.decode()
    assert_stays_on_ops("entry page after run now", detail)


def test_run_all_on_the_custom_site_queues_a_job_shown_on_its_dashboard(client, dead_task):
    response = client.post(OPS + "task/action/", {
        "action": "requeue_all", "queue": "default", "state": "dead",
        "next": OPS + "task/dead/?queue=default", "post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == OPS + "task/#bulk-jobs"
    assert get_broker().counts("default")["dead"] == 1  # queued, not moved
    dashboard = client.get(OPS + "task/").content.decode()
    assert "Run all 1 dead task of queue default now" in dashboard
    assert_stays_on_ops("dashboard with a bulk job", dashboard)
