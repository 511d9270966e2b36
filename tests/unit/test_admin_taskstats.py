"""The task statistics page and ``bgtasks taskstats``, the dashboard's oldest pending age
and its 24-hour chart: the numbers shown are those of real transitions driven through the
broker (claim + Ack, as a worker does), with its clock."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client

from demo.tasks import add, record
from django_bgtasks.admin_views.charts import minute_chart
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.metrics import MetricsStore, MinuteStats
from django_bgtasks.broker.types import Ack

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueue_now")]

STATS = "/admin/django_bgtasks/task/taskstats/"
DASHBOARD = "/admin/django_bgtasks/task/"


@pytest.fixture
def client(superuser_client):
    return superuser_client


def run_all(outcomes: list[str], wait_s: float = 0.0, run_s: float = 0.0,
            queue: str = "default") -> None:
    """Claim every pending task of ``queue`` after ``wait_s`` (their queue latency), hold
    them ``run_s`` (their duration), then end them with ``outcomes`` in order."""
    broker = get_broker()
    time.sleep(wait_s)
    claimed = broker.claim(queue, "w1", [], 100, 60_000, 10**5, 10**12).claimed
    assert len(claimed) == len(outcomes)
    time.sleep(run_s)
    acks = [Ack(c.id, c.attempt, outcome, delay_ms=3_600_000, error="E: x")
            for c, outcome in zip(sorted(claimed, key=lambda c: c.id), outcomes, strict=True)]
    broker.claim(queue, "w1", acks, 0, 60_000, 10**5, 10**12)


@pytest.fixture
def seeded():
    """record: 4 runs (2 done, 1 retried, 1 dead) due 60 ms before they started and
    running 30 ms; add: 1 run, done. Counted after the first roll, so in every window."""
    store = MetricsStore(get_broker())
    store.roll("default")
    for i in range(4):
        record.enqueue(f"r{i}")
    run_all(["done", "done", "retry", "dead"], wait_s=0.06, run_s=0.03)
    add.enqueue(1, 2)
    run_all(["done"])
    store.roll("default")
    return store


def row_of(response, task: str):
    [row] = [r for r in response.context["rows"] if r.task == task]
    return row


@pytest.mark.parametrize("window", ["hour", "day", "total"])
def test_stats_page_shows_runs_failures_and_quantiles_of_real_runs(client, seeded, window):
    response = client.get(STATS, {"window": window})
    names = [r.task for r in response.context["rows"]]
    assert names == ["demo.tasks.record", "demo.tasks.add"]  # most runs first
    row = row_of(response, "demo.tasks.record")
    assert (row.runs, row.failed, row.failure_rate, row.enqueued) == (4, 2, 0.5, 4)
    assert all(25 <= ms <= 50 for ms in row.duration)  # held 30 ms: the (25, 50] bucket
    assert all(50 <= ms <= 100 for ms in row.latency)  # waited 60 ms: (50, 100]
    html = response.content.decode()
    assert "50.0%" in html and re.search(r">[2-5]\d ms</td>", html)
    add_row = row_of(response, "demo.tasks.add")
    assert (add_row.runs, add_row.failed, add_row.failure_rate) == (1, 0, 0.0)


def test_stats_page_sorts_and_narrows_to_one_task(client, seeded):
    rows = client.get(STATS, {"sort": "name"}).context["rows"]
    assert [r.task for r in rows] == ["demo.tasks.add", "demo.tasks.record"]
    rows = client.get(STATS, {"sort": "failure"}).context["rows"]
    assert rows[0].task == "demo.tasks.record"
    response = client.get(STATS, {"task": "demo.tasks.add", "queue": "default"})
    assert [r.task for r in response.context["rows"]] == ["demo.tasks.add"]
    assert client.get(STATS, {"window": "nonsense"}).context["window"] == "hour"


def test_task_detail_and_dashboard_link_to_the_stats(client, seeded):
    task_id = record.enqueue("x").id
    html = client.get(f"{DASHBOARD}{task_id}/change/?queue=default").content.decode()
    assert (f'href="{STATS}?queue=default&amp;task=demo.tasks.record"' in html
            or f'href="{STATS}?task=demo.tasks.record&amp;queue=default"' in html)
    assert f'href="{STATS}"' in client.get(DASHBOARD).content.decode()


def test_task_names_from_redis_are_escaped(client, bgtasks_redis):
    broker = get_broker()
    record.enqueue("x")  # the queue is known
    broker.client.hincrby(broker.queue_keys("default").metrics, "e|<script>x()</script>", 3)
    html = client.get(STATS, {"window": "total"}).content.decode()
    assert "<script>x()" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html
    html = client.get(STATS, {"task": "<b>t</b>"}).content.decode()
    assert "<b>t</b>" not in html and "Task “&lt;b&gt;t&lt;/b&gt;” has no counts" in html


def test_stats_page_needs_staff_and_the_view_permission(bgtasks_redis):
    user = User.objects.create_user("staff", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(STATS).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_task",
                                                     content_type__app_label="django_bgtasks"))
    assert client.get(STATS).status_code == 200
    user.is_staff = False
    user.save()
    assert client.get(STATS).status_code == 302  # to the login page
    assert Client().get(STATS).status_code == 302


def test_dashboard_shows_each_queues_oldest_pending_age(client):
    record.enqueue("old")
    record.using(queue_name="mail").enqueue("x")
    run_all(["done"], queue="mail")  # mail: nothing pending
    time.sleep(1.1)
    response = client.get(DASHBOARD)
    ages = {row["stats"].name: row["age"] for row in response.context["rows"]}
    assert 1.0 <= ages["default"] < 30 and ages["mail"] is None
    cells = re.findall(r'<td class="num bgtasks-age">([^<]*)</td>', response.content.decode())
    assert sorted(cells) == sorted(["–", f"{ages['default']:.1f}s"])


def test_dashboard_minute_chart_counts_what_ran(client, seeded):
    html = client.get(DASHBOARD).content.decode()
    # 5 runs ended: 4 processed... every run's end is processed, retried and dead failed
    assert "<desc>5 processed and 2 failed in the last 1,440 minutes" in html
    assert html.count("<polyline") == 2


def test_minute_chart_is_accessible_escaped_svg_with_two_lines():
    start = datetime(2024, 5, 1, tzinfo=UTC)
    minutes = [MinuteStats(start + timedelta(minutes=n), n % 7, n % 2) for n in range(1440)]
    svg = str(minute_chart(minutes))
    assert svg.startswith("<svg") and svg.endswith("</svg>") and 'role="img"' in svg
    assert "<title>Processed and failed tasks per minute, last 24 hours (UTC)</title>" in svg
    assert svg.count("<polyline") == 2 and svg.count("points=") == 2
    assert ">10</text>" in svg  # the axis top: 6 rounded up to 10
    assert [label for label in ("00:00", "03:00", "21:00") if f">{label}</text>" in svg] \
        == ["00:00", "03:00", "21:00"]
    assert "busiest minute 00:06 UTC with 6 processed" in svg
    assert "<script" not in svg
    assert str(minute_chart([])).endswith("</svg>")


def test_cli_taskstats_prints_the_same_rows(seeded, capsys):
    call_command("bgtasks", "taskstats")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["task", "queue", "runs", "failed", "fail%"]
    assert lines[2].split()[:5] == ["demo.tasks.record", "default", "4", "2", "50.0%"]
    assert "2 task name(s), last hour." in out
    call_command("bgtasks", "taskstats", "--window", "day", "--json", "--sort", "name")
    data = json.loads(capsys.readouterr().out)
    assert data["window"] == "day"
    first = data["tasks"][0]
    assert (first["task"], first["runs"], first["failed"]) == ("demo.tasks.add", 1, 0)
    record_row = data["tasks"][1]
    assert record_row["failure_rate"] == 0.5 and 25 <= record_row["duration_ms"]["p99"] <= 50
