"""A person's path through the task admin, in a real browser against a live server, a real
worker and Redis: log in, open the dashboard, open the dead tasks, run two of them now,
and see them leave the dead list and run.

A second test seeds a realistic set of tasks (every state, a dead task with its tracebacks,
periodic entries) and writes the documentation's screenshots to docs/_static/screenshots/,
so that the pictures in the docs are those of the admin as it is now.

Debian's Chromium, driven by Playwright (never a downloaded browser). The first test's
screenshots go to artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from demo import recording, tasks
from django_bgtasks import chord, get_workflow, group
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.metrics import MetricsStore
from django_bgtasks.workflows.canvas import Plan, enqueue_plan
from helpers import counts, wait_until

pytestmark = pytest.mark.browser  # not in the cluster env: the views run there in the unit tests

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
DOCS_SCREENSHOTS = REPO / "docs" / "_static" / "screenshots"
# The docs' pictures: one width and a fixed scale, so that a page that did not change
# gives the same picture size from one run to the next.
DOCS_VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not shutil.which(CHROMIUM):
    pytest.skip(f"{CHROMIUM} missing (scripts/bootstrap installs it)", allow_module_level=True)


@pytest.fixture
def page(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls made here
    # (fixtures) are synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def shot(page, name: str, folder: Path = SCREENSHOTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True, animations="disabled",
                    caret="hide")


def log_in(page, live_server, next_url: str = "/admin/") -> None:
    page.goto(f"{live_server.url}/admin/login/?next={next_url}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")


@pytest.mark.django_db(transaction=True)
def test_staff_runs_two_dead_tasks_now_and_they_run(live_server, admin_user, page, run_worker,
                                                    redis_server):
    r = redis_server.client()
    tokens = ["browser-a", "browser-b", "browser-c"]
    # Fails on its first attempt with no retries: dead; succeeds when run again.
    for token in tokens:
        tasks.fail_then_succeed.using(max_retries=0).enqueue(token, failures=1)
    tasks.record.using(queue_name="mail").enqueue("<script>alert('x')</script>")
    worker = run_worker("--processes", "1", "--threads", "2", "--queues", "default")
    wait_until(lambda: counts()["dead"] == 3, timeout=20, message="three dead tasks")

    log_in(page, live_server)
    # From the admin index, under "Background tasks".
    page.get_by_role("link", name="Background tasks").first.wait_for()
    page.get_by_role("link", name="Tasks", exact=True).first.click()
    page.wait_for_selector("text=Queues")
    assert page.locator("svg").count() >= 1  # the 14-day chart, drawn server-side
    shot(page, "dashboard")

    page.goto(f"{live_server.url}/admin/django_bgtasks/task/dead/?queue=default")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    shot(page, "dead-list")

    boxes = page.locator("input.action-select")
    chosen = [boxes.nth(0).get_attribute("value"), boxes.nth(1).get_attribute("value")]
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.select_option("select[name=action]", "requeue")
    page.click("button[name=index]")
    page.wait_for_selector("text=Are you sure")
    for value in chosen:
        assert value.split(":", 1)[1] in page.content()
    page.click("input[type=submit][value^=Yes]")

    page.wait_for_selector(".messagelist")
    assert page.locator("#result_list tbody tr").count() == 1
    wait_until(lambda: len(recording.ran(r) & set(tokens)) >= 2, timeout=20,
               message="the two tasks run again and succeed")
    assert len(recording.ran(r) & set(tokens)) == 2  # exactly the two chosen ones
    assert counts()["dead"] == 1

    page.locator("#result_list tbody th a").first.click()
    page.wait_for_selector("text=Traceback")
    shot(page, "task-detail")
    worker.stop()
    for name in ("dashboard", "dead-list", "task-detail"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000

    # A task argument that looks like markup is shown as text and never runs.
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{live_server.url}/admin/django_bgtasks/task/pending/?queue=mail")
    assert page.get_by_text("<script>alert('x')</script>", exact=False).count() >= 1
    assert dialogs == []


# -- the documentation's screenshots ----------------------------------------------------

# What the docs' pictures show, declared by the live server and by the worker alike
# (BGTASKS_DEMO_PERIODIC in testproject/settings.py declares the same two entries).
DOCS_PERIODIC = [
    {"name": "demo-heartbeat", "task": "demo.tasks.reminder", "every": 15,
     "args": ["periodic heartbeat (every 15 s)"]},
    {"name": "nightly-report", "task": "demo.tasks.reminder", "cron": "30 2 * * *",
     "tz": "Europe/Paris", "args": ["nightly report (02:30 Paris time)"]},
]


def docs_id(label: str) -> str:
    """A task id that looks like a generated one but is the same on every run, so that
    the pictures do not change with the ids."""
    return hashlib.md5(f"docs-screenshot:{label}".encode()).hexdigest()


def seed_every_state(start_worker):
    """Tasks in every state, through a real worker: completed ones with results, dead ones
    with tracebacks, one waiting for a retry, scheduled ones, one running, and pending
    ones in a paused queue. Returns the worker (still running, with its running task)."""
    for i in range(1, 6):
        tasks.add.using(task_id=docs_id(f"add-{i}")).enqueue(i, i * 10)
    tasks.always_fails.using(task_id=docs_id("always-fails")).enqueue()
    tasks.skip_retry.using(task_id=docs_id("bounced"), queue_name="mail").enqueue(
        "mail to ada@example.com bounced")
    tasks.retry_then_record.using(task_id=docs_id("retry")).enqueue("monthly-invoices", 3600)
    for day, text in ((1, "renew the TLS certificate"), (7, "rotate the API keys")):
        tasks.reminder.using(task_id=docs_id(text), run_after=timedelta(days=day)).enqueue(text)
    worker = start_worker("--processes", "1", "--threads", "4", "--queues", "default,mail",
                          env={"BGTASKS_DEMO_PERIODIC": "1"})
    broker = get_broker()

    def settled() -> bool:
        default, mail = broker.counts("default"), broker.counts("mail")
        return (default["dead"] == 1 and default["completed"] == 5 and default["retry"] == 1
                and mail["dead"] == 1)

    wait_until(settled, timeout=30, message="the seeded tasks reach their states")
    # One long task keeps running while the pictures are taken (the worker is killed at
    # teardown); the mail queue is paused with welcome mails waiting.
    tasks.sleep_then_record.using(task_id=docs_id("import")).enqueue("import-catalogue", 600)
    wait_until(lambda: broker.counts("default")["active"] == 1, timeout=15,
               message="the long task runs")
    broker.pause("mail")
    for user_id in (7, 8, 9):
        tasks.send_welcome.using(task_id=docs_id(f"welcome-{user_id}")).enqueue(user_id)
    wait_until(lambda: any(e["outcome"] == "fired"
                           for e in broker.periodic_history("default", "demo-heartbeat")),
               timeout=30, message="the heartbeat entry fires once")
    return worker


def seed_limits() -> None:
    """Limits in use in queue "limited", which the docs' worker does not serve: claimed
    here as a worker claims, so that some tasks run (and stay running) and the rest wait:
    the named limit demo-api (2 at once, 20/s), one run at a time per account, and
    limited_span's 3 at once."""
    for i in range(5):
        tasks.api_call.using(task_id=docs_id(f"api-{i}")).enqueue(f"charge-{i}", 1)
    for account, n in ((42, 3), (7, 2)):
        for i in range(n):
            tasks.per_account.using(task_id=docs_id(f"acct-{account}-{i}")).enqueue(
                account, f"sync-{account}-{i}")
    for i in range(4):
        tasks.limited_span.using(task_id=docs_id(f"span-{i}")).enqueue(f"rebuild-{i}", 1)
    get_broker().claim("limited", "docs-seeder", [], 20, 600_000, 100_000, 10**12)


def seed_workflow() -> str:
    """A chord of five squares with an on_complete, run to its end by the docs' worker;
    its id is fixed as the tasks' are (enqueue_plan: the one place that takes an id)."""
    flow = chord(group(tasks.wf_square.s(i) for i in range(1, 6)),
                 tasks.wf_collect.s("sum of squares")).on_complete(tasks.wf_report.s("report"))
    workflow_id = docs_id("workflow")
    enqueue_plan(Plan.of(flow.steps, flow.finally_call), workflow_id)
    wait_until(lambda: get_workflow(workflow_id).finished_at is not None, timeout=30,
               message="the docs' workflow ends")
    return workflow_id


@pytest.mark.soak  # regenerates the docs' images: once per CI run is enough
@pytest.mark.django_db(transaction=True)
def test_the_docs_screenshots(live_server, admin_user, page, start_worker, settings):
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": DOCS_PERIODIC}
    metrics = MetricsStore(get_broker())
    for queue in ("default", "mail"):  # the per-minute chart counts from here
        metrics.roll(queue)
    seed_every_state(start_worker)
    for queue in ("default", "mail"):  # as the worker's janitor would, a little later
        metrics.roll(queue)
    page.set_viewport_size(DOCS_VIEWPORT)
    # Without the admin's navigation sidebar the lists keep all their columns at this width.
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    log_in(page, live_server, "/admin/django_bgtasks/task/")
    base = f"{live_server.url}/admin/django_bgtasks"

    page.wait_for_selector("text=Queues")
    shot(page, "dashboard", DOCS_SCREENSHOTS)

    page.goto(f"{base}/task/dead/")
    assert page.locator("#result_list tbody tr").count() == 2
    shot(page, "dead-list", DOCS_SCREENSHOTS)

    page.goto(f"{base}/task/{docs_id('always-fails')}/change/?queue=default")
    page.wait_for_selector("text=Traceback")
    shot(page, "task-detail", DOCS_SCREENSHOTS)

    page.goto(f"{base}/periodictask/")
    page.wait_for_selector("caption:text('Periodic entries')")
    assert page.get_by_role("link", name="nightly-report", exact=True).count() == 1
    shot(page, "periodic", DOCS_SCREENSHOTS)

    seed_limits()  # after the other pictures, which stay as they were
    page.goto(f"{base}/task/limits/")
    page.wait_for_selector("caption:text('Limits')")
    assert page.locator("#content-main tbody tr").count() == 4
    shot(page, "limits", DOCS_SCREENSHOTS)

    workflow_id = seed_workflow()  # after the other pictures too
    page.goto(f"{base}/task/workflows/{workflow_id}/")
    page.wait_for_selector("text=On complete")
    assert page.locator("caption:text('Members') + thead + tbody tr").count() == 7
    shot(page, "workflow", DOCS_SCREENSHOTS)

    for name in ("dashboard", "dead-list", "task-detail", "periodic", "limits", "workflow"):
        assert (DOCS_SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
