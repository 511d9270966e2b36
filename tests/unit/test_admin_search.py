"""Searching the task lists by arguments, latest error and worker (admin and
``bgtasks list``): what matches, the bounded scan's partial flag, escaping, and the live
refresh's switch and regions on the list pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client

from demo.tasks import add, record
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueue_now")]

LIST = "/admin/django_bgtasks/task/{}/"


@pytest.fixture
def client(superuser_client):
    return superuser_client


def run_on(worker: str, outcome: str | None, error: str = "") -> None:
    """Claim every pending task of 'default' as ``worker``, then end them with ``outcome``."""
    broker = get_broker()
    claimed = broker.claim("default", worker, [], 100, 60_000, 10**5, 10**12).claimed
    if outcome:
        broker.claim("default", worker, [Ack(c.id, c.attempt, outcome, error=error)
                                         for c in claimed], 0, 60_000, 10**5, 10**12)


def ids_of(response) -> set[str]:
    return {row.info.id for row in response.context["rows"]}


def test_search_by_arguments_error_and_worker_each_and_together(client):
    invoice = record.enqueue("invoice-42", note="urgent").id
    record.enqueue("receipt-7")
    run_on("web-1:100", "dead", error="ValueError: invoice total is negative")
    broken = record.enqueue("invoice-43").id
    run_on("web-2:200", "dead", error="KeyError: 'customer'")
    pending = add.enqueue(40, 2).id

    dead = LIST.format("dead")
    assert ids_of(client.get(dead, {"args": "INVOICE"})) == {invoice, broken}
    assert ids_of(client.get(dead, {"args": 'note="urgent"'})) == {invoice}  # kwargs too
    assert ids_of(client.get(dead, {"error": "negative"})) == {invoice, record_id(
        client, dead, "receipt-7")}
    assert ids_of(client.get(dead, {"worker": "web-2"})) == {broken}
    assert ids_of(client.get(dead, {"args": "invoice", "worker": "web-1"})) == {invoice}
    assert ids_of(client.get(LIST.format("pending"), {"args": "40, 2"})) == {pending}
    html = client.get(dead, {"error": "nothing like this"}).content.decode()
    assert "No dead task whose latest error contains &#x27;nothing like this&#x27;." in html


def record_id(client, url: str, token: str) -> str:
    [row] = client.get(url, {"args": token}).context["rows"]
    return row.info.id


def test_a_long_message_is_searched_in_its_head_only(client):
    long_one = record.enqueue("needle-at-start", "x" * 2000, "needle-at-end").id
    url = LIST.format("pending")
    assert ids_of(client.get(url, {"args": "needle-at-start"})) == {long_one}
    assert ids_of(client.get(url, {"args": "needle-at-end"})) == set()


def test_search_scan_is_bounded_and_says_when_partial(client, monkeypatch):
    for i in range(12):
        record.enqueue(f"token-{i}")
    monkeypatch.setattr("django_bgtasks.ops.inspect.BATCH", 4)
    monkeypatch.setattr("django_bgtasks.ops.inspect.NAME_SCAN_LIMIT", 4)
    response = client.get(LIST.format("pending"), {"args": "token-1"})
    html = response.content.decode()
    assert "Partial search: 1 match among the first 4 of 12 pending tasks" in html
    monkeypatch.setattr("django_bgtasks.ops.inspect.NAME_SCAN_LIMIT", 100)
    html = client.get(LIST.format("pending"), {"args": "token-1"}).content.decode()
    assert "Partial search" not in html
    assert "3 pending tasks whose arguments contain &#x27;token-1&#x27;" in html


def test_search_terms_and_stored_text_are_escaped(client):
    record.enqueue("<script>alert(1)</script>")
    run_on("<b>host</b>", "dead", error="<img src=x onerror=alert(2)>")
    html = client.get(LIST.format("dead"), {"args": "<script>", "error": "<img",
                                            "worker": "<b>"}).content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>host" not in html
    assert "&lt;script&gt;alert(1)" in html  # the row's arguments, as text
    assert 'value="&lt;img"' in html  # the term, back in its field


def test_search_needs_the_view_permission(bgtasks_redis):
    staff = User.objects.create_user("staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(LIST.format("dead"), {"args": "x"}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_task",
                                                      content_type__app_label="django_bgtasks"))
    assert client.get(LIST.format("dead"), {"args": "x"}).status_code == 200


def test_list_pages_load_live_js_and_mark_their_regions(client):
    html = client.get(LIST.format("pending")).content.decode()
    assert 'src="/static/django_bgtasks/live.js" defer' in html
    assert "data-live-control" in html and 'data-live-period="5"' in html
    assert all(f'data-live-region="{name}"' in html for name in ("tabs", "results", "bulk"))
    # the search form stays out of the regions: what is typed there is never replaced
    assert html.index('id="changelist-search"') < html.index('data-live-region="results"')
    # an id looked up and not found is not refreshed (its message would repeat)
    assert "live.js" not in client.get(LIST.format("pending"), {"id": "nope"}).content.decode()


def test_cli_list_searches_the_same_way(capsys):
    record.enqueue("invoice-42")
    record.enqueue("receipt-7")
    run_on("web-1:100", "dead", error="ValueError: negative total")
    call_command("bgtasks", "list", "dead", "--args", "invoice", "--worker", "web-1")
    out = capsys.readouterr().out
    assert "invoice-42" in out and "receipt-7" not in out
    assert ("1 dead task(s) whose arguments contain 'invoice' and worker contains 'web-1'"
            in out)
    call_command("bgtasks", "list", "dead", "--error", "NEGATIVE", "--json")
    out = capsys.readouterr().out
    assert '"error": "NEGATIVE"' in out and '"complete": true' in out and "receipt-7" in out
