"""A person's path through the task admin, in a real browser against a live server, a real
worker and Redis: log in, open the dashboard, open the dead tasks, run two of them now,
and see them leave the dead list and run.

Debian's Chromium, driven by Playwright (never a downloaded browser). Screenshots of the
dashboard, the dead list and a task detail go to artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from demo import recording, tasks
from helpers import counts, wait_until

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
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


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


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

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
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
