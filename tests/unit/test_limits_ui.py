"""Flow control seen from the admin and ``manage.py bgtasks``: the Limits page and
``bgtasks limits``, the waiting reason in lists, a task's limits and fair key on its page
and in ``bgtasks show``.

Limits are made as a worker makes them: tasks enqueued through the public API, then
claimed with the broker's claim call, the ones over a limit left waiting."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from demo.tasks import record
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import LimitStatus
from django_bgtasks.ops.limit_rows import LimitRow
from helpers import BgtasksCommand

LIMITS_PAGE = "/admin/django_bgtasks/task/limits/"
DASHBOARD = "/admin/django_bgtasks/task/"
HOSTILE = "<script>alert(1)</script>"

run = BgtasksCommand()


@pytest.fixture(autouse=True)
def enqueue_at_once(bgtasks_redis, settings):
    # The admin tests run inside a transaction that never commits: enqueue must not wait.
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False,
                        "LIMITS": {"api": {"rate": "3/h"}}}


def claim(queue: str, n: int) -> list[str]:
    return [c.id for c in get_broker().claim(queue, "w", [], n, 60_000, 10_000,
                                             10**12).claimed]


def seed_limits() -> dict[str, list[str]]:
    """Queue "lim": 2 of 5 tasks run under a concurrency limit of 2, 3 wait (fair key
    "tenant-a"). Queue "api": 3 of 4 start under the named rate limit "api" (3/h), 1 waits
    for a token. Returns the waiting ids of each queue."""
    lim = record.using(queue_name="lim", concurrency_limit=2,
                       fair_key=lambda token: "tenant-a")
    lim_ids = [lim.enqueue(f"t{i}").id for i in range(5)]
    api = record.using(queue_name="api", limits=["api"])
    api_ids = [api.enqueue(f"a{i}").id for i in range(4)]
    assert claim("lim", 5) == lim_ids[:2] and claim("api", 4) == api_ids[:3]
    return {"lim": lim_ids[2:], "api": api_ids[3:]}


def seed_hostile() -> str:
    """A task waiting for a limit whose id holds a limit_key value that is markup."""
    task = record.using(queue_name="evil", concurrency_limit=1,
                        limit_key=lambda token: HOSTILE)
    task.enqueue("first")
    waiting = task.enqueue("second").id
    claim("evil", 2)
    return waiting


# -- admin ----------------------------------------------------------------------------------


def login(*perms: str, superuser: bool = False) -> Client:
    if superuser:
        user = User.objects.create_superuser("root", "root@example.com", None)
    else:
        user = User.objects.create_user(f"staff-{'-'.join(perms)}", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(
            content_type__app_label="django_bgtasks", codename__in=[f"{p}_task" for p in perms]))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_():
    return login(superuser=True)


def table_rows(html: str) -> list[list[str]]:
    """The cells' text of each row of the page's limits table."""
    body = html.split('<caption>Limits</caption>', 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]  # the first is the header
    return [[re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)] for row in rows]


@pytest.mark.django_db
def test_the_limits_page_shows_each_limit_by_queue_then_id(admin_client_):
    seed_limits()

    response = admin_client_.get(LIMITS_PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    api, lim = table_rows(html)
    assert api[:6] == ["api", "api", "—", "3/h", "0.0", "1"]
    assert lim[:6] == ["lim", record.name, "2 / 2", "—", "—", "3"]
    for row in (api, lim):  # the first waiter's age, seconds ago
        assert re.fullmatch(r"\d+\.\ds", row[6]), row
    assert 'href="/admin/django_bgtasks/task/waiting/?queue=lim"' in html
    assert 'href="/admin/django_bgtasks/task/waiting/?queue=api"' in html
    assert "the first of them, the next to start" in html  # what the age means

    only = table_rows(admin_client_.get(LIMITS_PAGE, {"queue": "lim"}).content.decode())
    assert [row[0] for row in only] == ["lim"]


@pytest.mark.django_db
def test_the_limits_page_says_when_no_limit_is_in_use_and_the_dashboard_links_it(
        admin_client_):
    html = admin_client_.get(LIMITS_PAGE).content.decode()
    assert "No limit is in use" in html
    assert f'href="{LIMITS_PAGE}"' in admin_client_.get(DASHBOARD).content.decode()


@pytest.mark.django_db
def test_the_limits_page_needs_the_view_permission():
    seed_limits()
    assert login("view").get(LIMITS_PAGE).status_code == 200
    assert login().get(LIMITS_PAGE).status_code == 403
    anonymous = Client().get(LIMITS_PAGE)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


@pytest.mark.django_db
def test_a_limit_key_value_is_shown_as_text(admin_client_):
    waiting = seed_hostile()
    pages = [admin_client_.get(LIMITS_PAGE),
             admin_client_.get("/admin/django_bgtasks/task/waiting/", {"queue": "evil"}),
             admin_client_.get(f"/admin/django_bgtasks/task/{waiting}/change/")]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.django_db
def test_the_waiting_list_shows_why_each_task_waits(admin_client_):
    seed_limits()
    html = admin_client_.get("/admin/django_bgtasks/task/waiting/",
                             {"queue": "lim"}).content.decode()
    assert "Waiting for" in html
    assert html.count(f"limit {record.name}: 2/2 running") == 3
    other = admin_client_.get("/admin/django_bgtasks/task/pending/").content.decode()
    assert "Waiting for" not in other


@pytest.mark.django_db
def test_a_waiting_task_page_shows_its_reason_since_limits_and_fair_key(admin_client_):
    waiting = seed_limits()["lim"][0]
    html = admin_client_.get(f"/admin/django_bgtasks/task/{waiting}/change/").content.decode()
    cells = dict(re.findall(r'<th scope="row">([^<]+)</th><td>(.*?)</td>', html, re.S))
    assert cells["Waiting for"] == f"limit {record.name}: 2/2 running"
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells["Waiting since"])
    assert f"<code>{record.name}</code>" in cells["Limits"]
    assert f'href="{LIMITS_PAGE}?queue=lim"' in cells["Limits"]
    assert cells["Fair key"] == "<code>tenant-a</code>"


# -- command line ---------------------------------------------------------------------------


def test_bgtasks_limits_prints_each_limit():
    seed_limits()
    lines = run("limits").splitlines()
    assert lines[0].split() == ["queue", "limit", "running", "rate", "tokens", "waiting",
                                "oldest", "waiter"]
    api, lim = (line.split() for line in lines[2:])
    assert api[:6] == ["api", "api", "-", "3/h", "0.0", "1"]
    assert lim[:7] == ["lim", record.name, "2", "/", "2", "-", "-"] and lim[7] == "3"
    assert re.fullmatch(r"\d+\.\ds", api[6]) and re.fullmatch(r"\d+\.\ds", lim[8])
    assert [line.split()[0] for line in run("limits", "--queue", "api").splitlines()[2:]] \
        == ["api"]


def test_bgtasks_limits_json():
    seed_limits()
    data = run.json("limits")
    assert data["total"] == 2 and data["complete"] is True
    api, lim = data["limits"]
    assert {**api, "tokens": round(api["tokens"], 1)} == {
        "queue": "api", "id": "api", "running": 3, "concurrency": None, "rate": "3/h",
        "rate_count": 3, "rate_period_ms": 3_600_000, "tokens": 0.0, "waiting": 1,
        "waiting_since": api["waiting_since"],
        "oldest_wait_seconds": api["oldest_wait_seconds"]}
    assert (lim["id"], lim["running"], lim["concurrency"], lim["rate"], lim["tokens"],
            lim["waiting"]) == (record.name, 2, 2, None, None, 3)
    for entry in (api, lim):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["waiting_since"])
        assert 0 <= entry["oldest_wait_seconds"] < 600


def test_bgtasks_limits_without_limits_says_so():
    assert run("limits").startswith("No limit is in use:")
    assert run.json("limits") == {"limits": [], "total": 0, "complete": True}


def test_bgtasks_list_waiting_shows_the_reason():
    seed_limits()
    output = run("list", "waiting", "--queue", "lim")
    assert "waiting for" in output.splitlines()[0]
    assert output.count(f"limit {record.name}: 2/2 running") == 3
    assert "waiting for" not in run("list", "active", "--queue", "lim").splitlines()[0]


def test_bgtasks_show_prints_limits_fair_key_and_why_it_waits():
    waiting = seed_limits()["lim"][0]
    fields = dict(line.split(":", 1) for line in run("show", waiting).splitlines()
                  if line[:1] != " " and ":" in line)
    assert fields["limits"].strip() == record.name
    assert fields["fair key"].strip() == "tenant-a"
    assert fields["waiting for"].strip() == f"limit {record.name}: 2/2 running"
    assert fields["waiting from"].strip().endswith("(now)")
    assert "waiting for:" not in run("show", claim_one_plain())


def claim_one_plain() -> str:
    task_id = record.using(queue_name="plain").enqueue("x").id
    claim("plain", 1)
    return task_id


# -- how a limit reads (no Redis) -----------------------------------------------------------


def status(**fields) -> LimitStatus:
    base = {"queue": "q", "id": "x", "running": 0, "concurrency": 0, "rate_count": 0,
            "rate_period_ms": 0, "tokens": None, "waiting": 0, "next_waiter_since_ms": None}
    return LimitStatus(**{**base, **fields})


@pytest.mark.parametrize("fields, running, rate, tokens", [
    ({"running": 2, "concurrency": 5}, "2 / 5", None, None),
    ({"rate_count": 50, "rate_period_ms": 1000, "tokens": 12.345}, None, "50/s", "12.3"),
    ({"rate_count": 7, "rate_period_ms": 1500, "tokens": 0.04}, None, "7/1500ms", "0.0"),
])
def test_a_limit_row_reads(fields, running, rate, tokens):
    row = LimitRow(status(**fields), now_ms=1_000_000)
    assert (row.running, row.rate, row.tokens) == (running, rate, tokens)


@pytest.mark.parametrize("since, age", [
    (1_000_000 - 400, "0.4s"), (1_000_000 - 250_000, "4m 10s"),
    (1_000_000 - 7_500_000, "2h 5m"), (1_000_000 + 5_000, "0.0s"),  # clocks: never negative
])
def test_the_oldest_waiters_age_is_redis_now_minus_its_waiting_since(since, age):
    row = LimitRow(status(waiting=1, next_waiter_since_ms=since), now_ms=1_000_000)
    assert row.oldest_wait == age
