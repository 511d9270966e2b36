"""A person's path through the periodic task admin, in a real browser against a live
server, two real worker hosts firing a 1-second entry, and Redis: open the page from the
dashboard, see the next runs and the last run, disable the entry and see every host stop
within one tick, enable it, run it now once and see exactly one task run.

The browser, its launch and the screenshots are test_browser.py's (Debian's Chromium
through Playwright); screenshots of the list and of the entry's page go to
artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time

import pytest

from demo import recording
from django_bgtasks.broker import get_broker
from helpers import counts, wait_until
from test_browser import SCREENSHOTS, page, shot  # noqa: F401  (page: the fixture)

pytestmark = pytest.mark.browser  # not in the cluster env: the views run there in the unit tests

ENTRY = "every-second"
PERIODIC_ENV = {"BGTASKS_TEST_PERIODIC": ENTRY}
TASK = "demo.tasks.record_redis_time"
NOW_PREFIX = f"cron:{ENTRY}:now:"
QUIET_FOR = 3.0  # seconds after "Disable" returned in which nothing may fire


def redis_now(r) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def history() -> list[dict]:
    return get_broker().periodic_history("default", ENTRY)


def fired_after(tick_ms: int) -> list[dict]:
    return [h for h in history() if h["outcome"] == "fired" and h["tick"] > tick_ms]


def logged_ticks(hosts) -> list[int]:
    """The ticks the hosts say they enqueued ("periodic every-second: enqueued cron:...")."""
    return [int(t) for host in hosts
            for t in re.findall(rf"periodic {ENTRY}: enqueued cron:{ENTRY}:(\d+)",
                                host.log_text())]


@pytest.mark.django_db(transaction=True)
def test_disable_stops_every_host_enable_resumes_and_run_now_runs_once(
        live_server, admin_user, page, start_worker, redis_server, settings):  # noqa: F811
    # The live server declares the same entry as the hosts (testproject's test entries).
    settings.BGTASKS = {**settings.BGTASKS, "PERIODIC": [
        {"name": ENTRY, **settings.TEST_PERIODIC_ENTRIES[ENTRY]}]}
    r = redis_server.client()
    hosts = [start_worker("--processes", "1", "--threads", "2", env=PERIODIC_ENV)
             for _ in range(2)]

    page.goto(f"{live_server.url}/admin/login/?next=/admin/django_bgtasks/task/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("text=Queues")
    page.click("ul.object-tools a:text-is('Periodic tasks')")  # from the dashboard
    page.wait_for_selector("caption:text('Periodic entries')")
    row = page.locator("tbody tr", has=page.get_by_role("link", name=ENTRY, exact=True))
    next_runs, last_run = row.locator("td").nth(3), row.locator("td").nth(4)
    assert next_runs.locator("time").count() == 3

    wait_until(lambda: fired_after(0), timeout=20, message="a host fires a tick")
    page.reload()
    assert "after the tick" in last_run.inner_text()
    shot(page, "periodic-list")

    # Disable: from the moment the click returns, no host fires another tick.
    row.get_by_role("button", name="Disable").click()
    page.wait_for_selector(f"text=Periodic task {ENTRY} disabled")
    clicked = redis_now(r)
    assert row.get_by_role("button", name="Enable").is_visible()
    wait_until(lambda: counts()["pending"] == 0 and counts()["active"] == 0, timeout=5,
               message="the ticks fired before the switch have run")
    ran = len(recording.times(r))
    time.sleep(max(0.0, QUIET_FOR - (redis_now(r) - clicked) / 1000))
    assert fired_after(clicked + 1000) == []
    assert [t for t in logged_ticks(hosts) if t > clicked + 1000] == []  # each host's word
    assert len(recording.times(r)) == ran and counts()["pending"] == 0
    assert all(host.is_running() for host in hosts)

    # Enable: the next tick fires again; the ones missed while off never do.
    before_enable = redis_now(r)
    row.get_by_role("button", name="Enable").click()
    page.wait_for_selector(f"text=Periodic task {ENTRY} enabled")
    wait_until(lambda: fired_after(before_enable), timeout=5,
               message="a tick fires after Enable")
    assert all(h["tick"] > before_enable - 1000 for h in fired_after(clicked + 1000))

    # Run now, once: one task, which runs once.
    row.get_by_role("button", name="Run now").click()
    message = page.wait_for_selector("text=enqueued, to run now").inner_text()
    task_id = re.search(rf"task ({re.escape(NOW_PREFIX)}[0-9a-f]{{32}}) enqueued", message)[1]
    done = f"task {TASK}[{task_id}] succeeded"
    wait_until(lambda: any(done in host.log_text() for host in hosts), timeout=10,
               message="the run-now task runs")
    time.sleep(0.5)  # time enough for a duplicate to show
    runs_now = [h for h in history() if h["outcome"] == "run now"]
    assert [h["id"] for h in runs_now] == [task_id]
    logs = "".join(host.log_text() for host in hosts)
    assert logs.count(f"[{NOW_PREFIX}") == 1 and logs.count(done) == 1

    page.get_by_role("link", name=ENTRY, exact=True).click()
    page.wait_for_selector("caption:text('History')")
    outcomes = page.locator("tbody td:nth-child(4)").all_inner_texts()
    assert {"fired", "disabled", "enabled", "run now", "started"} <= set(outcomes)
    shot(page, "periodic-detail")
    for name in ("periodic-list", "periodic-detail"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
