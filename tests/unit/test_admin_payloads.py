"""Big payloads in the admin and the CLI (issue 13): lists, the name search and the
confirmation page read a small bounded summary of each task; a task's page shows at most
64 KB of each block, says how big the whole is, and serves the whole JSON as a download.
Whatever size Redis holds: big arguments (enqueued under a raised MAX_MESSAGE_BYTES, or by
an older version that kept no summary), big results, big tracebacks, damaged records.

What a page costs is measured where it is paid: the bytes Redis sends (INFO stats
total_net_output_bytes), so these tests need one plain redis-server.
"""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from hypothesis import example, given
from hypothesis import strategies as st

from demo.tasks import record
from django_bgtasks.broker import get_broker
from django_bgtasks.ops.summary import PREVIEW_CHARS, summarize
from helpers import BgtasksCommand, drive

pytestmark = [pytest.mark.django_db,
              pytest.mark.single_redis(reason="counts the bytes one redis-server sends")]

BIG = 2_700_000  # the 2.7 MB argument
BOUND = 1_000_000  # what one page may read from Redis, whatever the tasks hold
HOUR_MS = 3_600_000
ACTION = "/admin/django_bgtasks/task/action/"
run = BgtasksCommand()


@pytest.fixture(autouse=True)
def big_messages_allowed(bgtasks_redis, settings):
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False,
                        "MAX_MESSAGE_BYTES": 4 * 2**20}


@pytest.fixture
def admin():
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client


def login_with(*perms: str) -> Client:
    user = User.objects.create_user("staff-" + "-".join(perms), is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="django_bgtasks", codename__in=[f"{p}_task" for p in perms]))
    client = Client()
    client.force_login(user)
    return client


def keys(queue: str = "default"):
    return get_broker().queue_keys(queue)


def big_tasks(n: int, outcome: str | None = "dead", size: int = BIG, **ack) -> list[str]:
    """``n`` tasks of ``record`` with a ``size``-character argument, driven to ``outcome``."""
    ids = [record.enqueue("x" * size).id for _ in range(n)]
    if outcome:
        ack = {"error": "ValueError: boom", "traceback": "Traceback: boom", **ack}
        drive(ids, outcome, **ack)
    return ids


def sent_by_redis(raw, call):
    """(what ``call()`` returns, the bytes Redis sent meanwhile)."""
    before = int(raw.info("stats")["total_net_output_bytes"])
    result = call()
    return result, int(raw.info("stats")["total_net_output_bytes"]) - before


def list_url(state: str, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/admin/django_bgtasks/task/{state}/" + (f"?{query}" if query else "")


def detail_url(task_id: str) -> str:
    return f"/admin/django_bgtasks/task/{task_id}/change/?queue=default"


def download_url(task_id: str, part: str) -> str:
    return f"/admin/django_bgtasks/task/{task_id}/download/{part}/?queue=default"


def row_of(html: str, task_id: str) -> str:
    row = html[html.index(f">{task_id}</a>"):]
    return row[:row.index("</tr>")]


def forget_heads(raw, ids: list[str]) -> None:
    """Store the tasks' records as a version that kept no summary wrote them."""
    for task_id in ids:
        info = json.loads(raw.hget(keys().info, task_id))
        info.pop("head", None)
        raw.hset(keys().info, task_id, json.dumps(info))


# -- lists, search, confirmation ----------------------------------------------------------


@pytest.mark.parametrize("stored_by", ["this version", "an older version"])
def test_a_list_of_big_tasks_reads_and_shows_a_bounded_summary(admin, raw, stored_by):
    ids = big_tasks(5)
    if stored_by == "an older version":
        forget_heads(raw, ids)

    response, read = sent_by_redis(raw, lambda: admin.get(list_url("dead", queue="default")))

    assert response.status_code == 200
    assert read < BOUND, f"the page read {read:,} bytes from Redis"
    assert len(response.content) < 200_000
    html = response.content.decode()
    for task_id in ids:
        row = row_of(html, task_id)
        assert "<td>demo.tasks.record</td>" in row
        assert '&quot;' + "x" * 60 in row and "x" * 100 not in row
        assert re.search(r"2\.6\sMB", row), row  # the message's whole size
        assert "ValueError: boom" in row


def test_the_name_search_reads_a_bounded_summary(admin, raw):
    ids = big_tasks(5)
    response, read = sent_by_redis(raw, lambda: admin.get(list_url("dead", name="RECORD")))
    assert sorted(r.info.id for r in response.context["rows"]) == sorted(ids)
    assert read < BOUND, f"the search read {read:,} bytes from Redis"


def test_confirming_and_acting_on_selected_big_tasks_reads_a_bounded_summary(admin, raw):
    ids = big_tasks(5)
    fields = {"action": "delete", "_selected_action": [f"default:{i}" for i in ids],
              "next": list_url("dead")}

    confirm, read = sent_by_redis(raw, lambda: admin.post(ACTION, fields))
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Are you sure you want to delete the 5 selected tasks?" in html
    assert all(f"demo.tasks.record <code>{i}</code>" in html for i in ids)
    assert read < BOUND, f"the confirmation read {read:,} bytes from Redis"

    done, read = sent_by_redis(raw, lambda: admin.post(ACTION, {**fields, "post": "yes"}))
    assert done.status_code == 302 and raw.zcard(keys().dead) == 0
    assert read < BOUND, f"the action read {read:,} bytes from Redis"


def test_big_results_and_tracebacks_are_not_read_by_a_list(admin, raw):
    [done] = big_tasks(1, "done", size=10, result=json.dumps("r" * BIG),
                       result_ttl_ms=HOUR_MS)
    [dead] = big_tasks(1, size=10, traceback="t" * BIG)
    for state, task_id in (("completed", done), ("dead", dead)):
        response, read = sent_by_redis(raw, lambda s=state: admin.get(list_url(s)))
        assert task_id in response.content.decode()
        assert read < BOUND, f"the {state} list read {read:,} bytes from Redis"


def test_damaged_big_records_list_bounded(admin, raw):
    [undecodable, long_error, long_id] = big_tasks(2) + [
        record.using(task_id="i" * 20_000).enqueue("x" * BIG).id]
    drive([long_id], "dead", error="ValueError: boom")
    raw.hset(keys().msg, undecodable, b"\x80not json" + b"y" * BIG)
    forget_heads(raw, [undecodable])  # else the list shows the head kept at enqueue
    info = json.loads(raw.hget(keys().info, long_error))
    raw.hset(keys().info, long_error, json.dumps({**info, "last_error": "E" * BIG}))

    response, read = sent_by_redis(raw, lambda: admin.get(list_url("dead")))

    assert response.status_code == 200
    assert read < BOUND, f"the page read {read:,} bytes from Redis"
    rows = {r.info.id: r.info for r in response.context["rows"]}
    assert rows[undecodable].message_error and rows[undecodable].name == "<undecodable message>"
    assert rows[long_error].last_error.startswith("EEE")
    assert len(rows[long_error].last_error) <= 2_000
    assert rows[long_id].name == "demo.tasks.record"  # after an id longer than the summary


def test_the_cli_list_reads_a_bounded_summary(raw):
    ids = big_tasks(3)
    out, read = sent_by_redis(raw, lambda: run("list", "dead"))
    assert read < BOUND and all(i in out for i in ids)
    data, read = sent_by_redis(raw, lambda: run.json("list", "dead"))
    assert read < BOUND
    for task in data["tasks"]:
        assert task["preview"].startswith('"xxx') and len(task["preview"]) < 300
        assert task["message_bytes"] > BIG and task["args"] is None


# -- a task's page, and its download -------------------------------------------------------


def test_a_tasks_page_shows_at_most_64_kb_of_each_block(admin, raw):
    [task_id] = big_tasks(1, traceback="t" * 100_000)

    response, read = sent_by_redis(raw, lambda: admin.get(detail_url(task_id)))

    assert response.status_code == 200
    assert read < BOUND, f"the page read {read:,} bytes from Redis"
    assert len(response.content) < 400_000
    html = response.content.decode()
    assert re.search(r"Showing the first 64 KB of 2\.6\sMB", html)  # the arguments
    # the last failure's traceback, and the same in its attempt's row
    assert len(re.findall(r"Showing the first 64 KB of 97\.7\sKB", html)) == 2
    assert f'href="{download_url(task_id, "message")}"' in html
    assert f'href="{download_url(task_id, "errors")}"' in html
    assert "<strong>dead</strong>" in html and "demo.tasks.record" in html


def test_a_big_result_and_a_history_too_big_to_read_are_capped(admin, raw):
    [done] = big_tasks(1, "done", size=10, result=json.dumps("r" * BIG),
                       result_ttl_ms=HOUR_MS)
    [dead] = big_tasks(1, size=10, traceback="t" * BIG)
    for task_id, part in ((done, "result"), (dead, "errors")):
        response, read = sent_by_redis(raw, lambda t=task_id: admin.get(detail_url(t)))
        assert response.status_code == 200 and len(response.content) < 400_000
        assert read < BOUND, f"the page read {read:,} bytes from Redis"
        html = response.content.decode()
        assert re.search(r"Showing the first 64 KB of 2\.6\sMB", html), part
        assert f'href="{download_url(task_id, part)}"' in html


@pytest.mark.parametrize("part", ["message", "result", "errors"])
def test_the_download_serves_the_stored_json_whole(raw, part):
    [task_id] = big_tasks(1, "done", result=json.dumps("r" * 1000), result_ttl_ms=HOUR_MS)
    if part == "errors":
        [task_id] = big_tasks(1)
    viewer = login_with("view")

    response = viewer.get(download_url(task_id, part))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="{task_id}-{part}.json"'
    stored = {"message": keys().msg, "result": keys().result, "errors": keys().errors}[part]
    assert response.content == raw.hget(stored, task_id)


def test_the_download_needs_the_view_permission_and_an_existing_part():
    [task_id] = big_tasks(1, size=10)
    assert login_with().get(download_url(task_id, "message")).status_code == 403
    response = Client().get(download_url(task_id, "message"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    viewer = login_with("view")
    assert viewer.get(download_url(task_id, "result")).status_code == 404  # none kept
    assert viewer.get(download_url(task_id, "info")).status_code == 404
    assert viewer.get(download_url("ghost", "message")).status_code == 404


def test_a_long_message_keeps_its_head_in_its_record_and_a_short_one_none(raw):
    [long, short] = [record.enqueue("x" * 10_000).id, record.enqueue("x").id]
    head = json.loads(raw.hget(keys().info, long))["head"]
    assert head.startswith('{"name":"demo.tasks.record","queue":"default","args":["xxx')
    assert len(head.encode()) == 512
    assert "head" not in json.loads(raw.hget(keys().info, short))


@given(st.one_of(st.binary(max_size=600),
                 st.text(max_size=600).map(lambda t: ('{"name":"job","args":' + t).encode())))
@example(b'{"name":"\\ud800","args":["\\udc00",1')
def test_any_head_reads_as_a_summary(head):
    summary = summarize("default", "id", head, 10**6, None)
    assert isinstance(summary.info.name, str) and len(summary.preview) <= PREVIEW_CHARS
    summary.preview.encode()  # writable out, as a page or a terminal does
    summary.info.name.encode()


def test_a_head_shows_whole_arguments_as_a_call_and_cut_ones_as_stored():
    def preview(head: str) -> str:
        return summarize("default", "id", head.encode(), 10**6, None).preview

    assert preview('{"name":"n","queue":"q","args":[1,"a"],"kwargs":{"k":true},"v"') == \
        '1, "a", k=true'
    assert preview('{"name":"n","queue":"q","args":[1,"a"],"kwargs":{"k":"vvv') == \
        '1, "a", "k":"vvv...'
    assert preview('{"name":"n","queue":"q","args":["xx') == '"xx...'
    assert preview('{"name":"n","queue":"q"') == "..."


def test_the_periodic_pages_read_a_bounded_summary_of_the_last_run(admin, raw, settings):
    from django_bgtasks.periodic.status import PeriodicEntries

    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": [
        {"name": "report", "task": "demo.tasks.record_tick", "every": 3600, "args": ["r"]}]}
    task_id, _ = PeriodicEntries(get_broker()).run_now("report")
    drive([task_id], "done", result=json.dumps("r" * BIG), result_ttl_ms=HOUR_MS)
    for url in ("/admin/django_bgtasks/periodictask/",
                "/admin/django_bgtasks/periodictask/report/change/"):
        response, read = sent_by_redis(raw, lambda u=url: admin.get(u))
        assert response.status_code == 200
        assert quote(task_id) in response.content.decode()  # the link to its page
        assert read < BOUND, f"{url} read {read:,} bytes from Redis"
