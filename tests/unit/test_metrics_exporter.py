"""The Prometheus exporter and the autoscaling JSON (django_bgtasks.metrics), scraped
through the Django test client and `manage.py bgtasks metrics`, parsed with
prometheus_client's own parser and compared with what Redis holds after real transitions.
"""

from __future__ import annotations

import io
import json
import re
import sys
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from demo.tasks import add, record
from django_bgtasks import cancel_task
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.metrics import BUCKETS_MS, MetricsStore
from django_bgtasks.info import STATES
from django_bgtasks.metrics.checks import check_metrics
from django_bgtasks.metrics.collector import ENDS
from django_bgtasks.ops.inspect import Inspector
from helpers import TEST_TOPOLOGY, drive

TOKEN = "s3cret-token-for-the-tests"
URL, AUTOSCALE = "/bgtasks/metrics", "/bgtasks/autoscale"


@pytest.fixture
def queues(bgtasks_redis) -> tuple[str, str]:
    """Two queue names; on a cluster, on different masters."""
    if TEST_TOPOLOGY == "cluster":
        first, second, _ = bgtasks_redis.topology.queue_names_spread(3)
        return first, second
    return "default", "mail"


def metrics_setting(settings, **metrics) -> None:
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False,
                        "METRICS": metrics or {"ACCESS": "token", "TOKEN": TOKEN}}


@pytest.fixture
def token_access(settings) -> None:
    metrics_setting(settings)


def scrape(client: Client | None = None, **headers) -> dict[str, dict]:
    """{family name: {(sample name, labels as a sorted tuple): value}} of one scrape."""
    response = (client or Client()).get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def parse(text: str) -> dict[str, dict]:
    return {family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value
                          for s in family.samples}
            for family in text_string_to_metric_families(text)}


def value(found: dict[str, dict], family: str, sample: str | None = None, **labels) -> float:
    return found[family][(sample or family, tuple(sorted(labels.items())))]


def enqueue(n: int, queue: str, task=record) -> list[str]:
    return [task.using(queue_name=queue).enqueue(f"t{i}").id for i in range(n)]


def seed(first: str, second: str) -> None:
    """In ``first``: 3 succeeded, 1 retried, 2 dead, 1 active, 4 pending, 1 cancelled while
    queued; in ``second``: 2 pending, paused."""
    drive(enqueue(3, first), "done", first)
    drive(enqueue(1, first), "retry", first, error="E", delay_ms=3_600_000)
    drive(enqueue(2, first), "dead", first, error="E")
    drive(enqueue(1, first), None, first)
    [queued] = enqueue(1, first)
    cancel_task(queued, by="tests")
    enqueue(4, first)
    enqueue(2, second)
    get_broker().pause(second)


# -- what a scrape shows -------------------------------------------------------------------


@pytest.mark.django_db
def test_gauges_are_the_real_counts_per_queue_and_state(token_access, queues):
    first, second = queues
    seed(first, second)
    found = scrape()
    for stats in Inspector(get_broker()).stats([first, second]):
        for state in STATES:
            assert value(found, "bgtasks_tasks", queue=stats.name, state=state) \
                == stats.counts[state], (stats.name, state)
    assert value(found, "bgtasks_tasks", queue=first, state="pending") == 4
    assert value(found, "bgtasks_tasks", queue=first, state="active") == 1
    assert value(found, "bgtasks_queue_paused", queue=second) == 1
    assert value(found, "bgtasks_queue_paused", queue=first) == 0


@pytest.mark.django_db
def test_counters_and_histograms_are_the_metrics_hash(token_access, queues):
    first, second = queues
    seed(first, second)
    found = scrape()
    name = record.name
    stored = MetricsStore(get_broker()).read([first])[first][name]
    labels = {"queue": first, "task": name}
    assert value(found, "bgtasks_tasks_enqueued", "bgtasks_tasks_enqueued_total",
                 **labels) == stored.enqueued == 12
    assert value(found, "bgtasks_tasks_started", "bgtasks_tasks_started_total",
                 **labels) == stored.started == 7
    expected = {"succeeded": 3, "retried": 1, "dead": 2, "cancelled": 1, "expired": 0}
    for event in ENDS:
        family = f"bgtasks_tasks_{event}"
        assert value(found, family, f"{family}_total", **labels) == expected[event], event
    # Histograms: cumulative buckets in seconds ending at +Inf = count; sum in seconds.
    duration = "bgtasks_task_duration_seconds"
    for outcome, runs in (("succeeded", 3), ("retried", 1), ("dead", 2)):
        bounds = {**labels, "outcome": outcome}
        assert value(found, duration, f"{duration}_count", **bounds) == runs
        buckets = [value(found, duration, f"{duration}_bucket", **bounds,
                         le=str(ms / 1000)) for ms in BUCKETS_MS]
        assert buckets == sorted(buckets)
        assert value(found, duration, f"{duration}_bucket", **bounds, le="+Inf") == runs
        assert value(found, duration, f"{duration}_sum", **bounds) \
            == stored.duration[outcome].sum_ms / 1000
    latency = "bgtasks_task_queue_latency_seconds"
    assert value(found, latency, f"{latency}_count", **labels) == 7
    assert value(found, latency, f"{latency}_bucket", **labels, le="+Inf") == 7
    # The task names of the other queue are its own.
    assert value(found, "bgtasks_tasks_enqueued", "bgtasks_tasks_enqueued_total",
                 queue=second, task=name) == 2


@pytest.mark.django_db
def test_oldest_pending_age_is_seconds_since_due_and_0_when_none_pending(token_access, queues):
    first, second = queues
    enqueue(1, first)
    time.sleep(0.3)
    found = scrape()
    assert 0.3 <= value(found, "bgtasks_queue_oldest_pending_age_seconds", queue=first) < 30
    # A configured queue nothing was ever enqueued to is shown at 0, not missing.
    assert value(found, "bgtasks_queue_oldest_pending_age_seconds", queue="default"
                 if first != "default" else second) == 0


def heartbeat(worker_id: str, queues: str, processes: int, threads: int, busy: int) -> None:
    """A live worker as runbackground's supervisor announces itself (supervisor._announce)."""
    get_broker().heartbeat_worker(worker_id, {
        "host": "h", "pid": "1", "queues": queues, "processes": str(processes),
        "threads": str(threads), "started": f"{time.time():.3f}", "in_flight": str(busy)},
        ttl=30)


@pytest.mark.django_db
def test_workers_threads_and_the_load_per_queue(token_access, queues):
    first, second = queues
    drive(enqueue(2, first), None, first)  # 2 active
    enqueue(6, first)  # 6 pending
    enqueue(3, second)
    found = scrape()
    assert value(found, "bgtasks_workers") == 0
    assert value(found, "bgtasks_worker_threads", state="total") == 0
    # No thread serves a queue: its load is pending + active (to scale from zero).
    assert value(found, "bgtasks_queue_load", queue=first) == 8
    heartbeat("w1", f"{first}:2,{second}:1", processes=2, threads=4, busy=3)
    heartbeat("w2", f"{first}:1", processes=1, threads=8, busy=0)
    found = scrape()
    assert value(found, "bgtasks_workers") == 2
    assert value(found, "bgtasks_worker_processes") == 3
    assert value(found, "bgtasks_worker_threads", state="total") == 16
    assert value(found, "bgtasks_worker_threads", state="busy") == 3
    assert value(found, "bgtasks_queue_threads", queue=first) == 16
    assert value(found, "bgtasks_queue_threads", queue=second) == 8
    assert value(found, "bgtasks_queue_load", queue=first) == 8 / 16
    assert value(found, "bgtasks_queue_load", queue=second) == 3 / 8
    response = Client().get(AUTOSCALE, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response.json()["queues"][first] == {"pending": 6, "active": 2, "threads": 16,
                                                "load": 0.5}
    assert response.json()["queues"][second] == {"pending": 3, "active": 0, "threads": 8,
                                                 "load": 0.375}
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_the_command_prints_what_the_endpoint_serves(token_access, queues):
    first, second = queues
    seed(first, second)
    out = io.StringIO()
    call_command("bgtasks", "metrics", stdout=out)
    printed, served = parse(out.getvalue()), scrape()
    age = "bgtasks_queue_oldest_pending_age_seconds"  # grows between the two reads
    assert printed.pop(age).keys() == served.pop(age).keys()
    assert printed == served
    out = io.StringIO()
    call_command("bgtasks", "metrics", "--json", stdout=out)
    answer = Client().get(AUTOSCALE, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
    assert json.loads(out.getvalue()) == answer
    assert answer["queues"][first] == {"pending": 4, "active": 1, "threads": 0, "load": 5}


# -- scrape cost ---------------------------------------------------------------------------


def command_calls(client) -> dict[str, int]:
    """Commands run so far on the server (every master of a cluster), INFO excluded. One
    client for a whole test: a new one's connections would count (HELLO, CLUSTER SLOTS)."""
    if TEST_TOPOLOGY == "cluster":  # {node: stats} from every master
        per_node = client.info("commandstats", target_nodes=client.PRIMARIES).values()
    else:
        per_node = [client.info("commandstats")]
    total: dict[str, int] = {}
    for stats in per_node:
        for name, data in stats.items():
            if name != "cmdstat_info":
                total[name] = total.get(name, 0) + data["calls"]
    return total


def scrape_cost(client) -> dict[str, int]:
    before = command_calls(client)
    scrape()
    after = command_calls(client)
    return {name: n - before.get(name, 0) for name, n in after.items()
            if n != before.get(name, 0)}


@pytest.mark.django_db
def test_a_scrape_costs_the_same_commands_with_10_or_1000_tasks(token_access, queues,
                                                                   bgtasks_redis):
    first, second = queues
    add.using(queue_name=first).enqueue_many([((1, 2), {})] * 10)
    drive(enqueue(3, second), "done", second)
    scrape()  # the first one may open connections (CLIENT SETINFO...)
    with bgtasks_redis.client() as client:
        small = scrape_cost(client)
        add.using(queue_name=first).enqueue_many([((1, 2), {})] * 990)
        drive(enqueue(30, second), "dead", second, error="E")
        assert scrape_cost(client) == small
    # One command per queue and state, plus a handful per queue and per scrape.
    assert sum(small.values()) < 20 * len(STATES), small


# -- access --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_off_by_default_both_endpoints_are_404():
    for url in (URL, AUTOSCALE):
        assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


@pytest.mark.django_db
def test_token_access(token_access):
    client = Client()
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    for header in (None, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN):
        extra = {"HTTP_AUTHORIZATION": header} if header else {}
        response = client.get(URL, **extra)
        assert response.status_code == 401, header
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert "no-store" in response["Cache-Control"]
    # GET and HEAD only.
    assert client.post(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
    assert client.head(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def staff(name: str, *perms: str, is_staff: bool = True) -> Client:
    user = User.objects.create_user(name, is_staff=is_staff)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="django_bgtasks", codename__in=[f"{p}_task" for p in perms]))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_staff_access_needs_staff_with_the_view_permission(settings):
    metrics_setting(settings, ACCESS="staff")
    assert staff("viewer", "view").get(URL).status_code == 200
    assert staff("changer", "change").get(AUTOSCALE).status_code == 200
    assert staff("nothing").get(URL).status_code == 403
    assert staff("plain", "view", is_staff=False).get(URL).status_code == 403
    assert Client().get(URL).status_code == 403
    assert Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403


@pytest.mark.django_db
def test_ip_access_reads_remote_addr_and_a_proxy_header_only_when_told(settings):
    metrics_setting(settings, ACCESS="ips", ALLOW_IPS=["10.0.0.0/8", "::1"])
    client = Client()
    assert client.get(URL, REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get(URL, REMOTE_ADDR="::1").status_code == 200
    assert client.get(URL, REMOTE_ADDR="192.168.1.1").status_code == 403
    # A header any client can send is not trusted by default...
    assert client.get(URL, REMOTE_ADDR="192.168.1.1",
                      HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403
    # ...only when the setting names it; then its last address (the proxy's) counts.
    metrics_setting(settings, ACCESS="ips", ALLOW_IPS=["10.0.0.0/8"],
                    CLIENT_IP_HEADER="HTTP_X_FORWARDED_FOR")
    assert client.get(URL, REMOTE_ADDR="192.168.1.1",
                      HTTP_X_FORWARDED_FOR="1.2.3.4, 10.1.2.3").status_code == 200
    assert client.get(URL, REMOTE_ADDR="10.1.2.3",
                      HTTP_X_FORWARDED_FOR="10.1.2.3, 1.2.3.4").status_code == 403


@pytest.mark.django_db
def test_any_of_several_kinds_lets_in(settings):
    metrics_setting(settings, ACCESS=["token", "ips"], TOKEN=TOKEN, ALLOW_IPS=["10.0.0.0/8"])
    client = Client()
    assert client.get(URL, REMOTE_ADDR="10.0.0.1").status_code == 200
    assert client.get(URL, REMOTE_ADDR="8.8.8.8",
                      HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get(URL, REMOTE_ADDR="8.8.8.8").status_code == 401


@pytest.mark.django_db
def test_an_invalid_setting_leaves_the_endpoints_off(settings):
    metrics_setting(settings, ACCESS="token", TOKEN="short")
    assert Client().get(URL, HTTP_AUTHORIZATION="Bearer short").status_code == 404


@pytest.mark.django_db
def test_without_prometheus_client_the_text_says_how_to_install_it(token_access, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    response = Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 501
    assert b"pip install django-bgtasks[prometheus]" in response.content
    assert Client().get(AUTOSCALE, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    with pytest.raises(CommandError, match=r"django-bgtasks\[prometheus\]"):
        call_command("bgtasks", "metrics", stdout=io.StringIO())
    assert [w.id for w in check_metrics()] == ["bgtasks.W008"]


# -- the checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("metrics", "ids"), [
    ({"ACCESS": None}, []),
    ({"ACCESS": "token", "TOKEN": TOKEN}, []),
    ({"ACCESS": "staff"}, []),
    ({"ACCESS": ["staff", "ips"], "ALLOW_IPS": ["127.0.0.1", "fd00::/8"]}, []),
    ("token", ["bgtasks.E025"]),
    ({"ACCESS": "password"}, ["bgtasks.E025"]),
    ({"ACCESS": "staff", "TOKENS": "x"}, ["bgtasks.E025"]),
    ({"ACCESS": "token"}, ["bgtasks.E026"]),
    ({"ACCESS": "token", "TOKEN": "too-short"}, ["bgtasks.E026"]),
    ({"ACCESS": "ips"}, ["bgtasks.E027"]),
    ({"ACCESS": "ips", "ALLOW_IPS": ["10.0.0.0/8", "10.0.0.300"]}, ["bgtasks.E027"]),
    ({"ACCESS": "ips", "ALLOW_IPS": "10.0.0.0/8"}, ["bgtasks.E027"]),
    ({"ACCESS": "staff", "CLIENT_IP_HEADER": 1}, ["bgtasks.E027"]),
])
def test_the_checks(settings, metrics, ids):
    settings.BGTASKS = {**settings.BGTASKS, "METRICS": metrics}
    assert [e.id for e in check_metrics()] == ids


def test_the_settings_report_hides_the_token(settings):
    from django_bgtasks.ops.settings import settings_report

    metrics_setting(settings)
    [row] = [row for row in settings_report() if row.name == "METRICS"]
    assert row.value == {"ACCESS": "token", "TOKEN": "(hidden)"}
    assert TOKEN not in json.dumps([r.value for r in settings_report()])


# -- the docs' dashboard and alert rules ----------------------------------------------------


def test_the_dashboard_and_the_alert_rules_use_only_metrics_the_exporter_emits(token_access,
                                                                               queues):
    from helpers import REPO_ROOT

    first, second = queues
    seed(first, second)
    heartbeat("w1", f"{first}:1", processes=1, threads=2, busy=1)
    emitted = {name for family in scrape().values() for name, _ in family}
    dashboard = json.loads((REPO_ROOT / "docs/grafana/django-bgtasks.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = (REPO_ROOT / "docs/prometheus/alerts.yml").read_text()
    used = set(re.findall(r"\bbgtasks_\w+", " ".join(exprs)))
    assert used and used <= emitted, used - emitted
    in_rules = set(re.findall(r"\bbgtasks_\w+", rules))
    assert {"bgtasks_queue_oldest_pending_age_seconds", "bgtasks_tasks_dead_total",
            "bgtasks_workers"} <= in_rules <= emitted, in_rules - emitted
    # The rules' structure, without a YAML parser: each alert has an expr.
    assert rules.count("- alert:") == rules.count("expr:") >= 3
