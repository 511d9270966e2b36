"""Live refresh (live.js) in a real browser under a strict Content-Security-Policy:
the dashboard's counts change without a reload when tasks are enqueued, no CSP violation
is reported, the "Live" switch stops it (and is remembered), a selected row on a list is
never refreshed away, and with reduced motion preferred nothing refreshes.

The policy is the header of every response of the live server (added by a Playwright
route, so no server setting changes); Debian's Chromium, launched as test_browser.py does.
No worker runs: tasks are enqueued from the test, and the pages only read counts.
"""

from __future__ import annotations

import os
import shutil

import pytest

from demo import tasks

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'"
DASHBOARD = "/admin/django_bgtasks/task/"
PERIOD_S = 0.5  # the test's refresh period (the page's own: 5 s)
QUIET_S = 1.5  # three refreshes, were any to happen

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not shutil.which(CHROMIUM):
    pytest.skip(f"{CHROMIUM} missing (scripts/bootstrap installs it)", allow_module_level=True)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an event loop in this thread; the fixtures' ORM calls are
    # synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


def open_page(browser, live_server, errors: list[str], **context_options):
    """A logged-in page of a new browser context whose responses carry the CSP header."""
    page = browser.new_context(**context_options).new_page()
    page.set_default_timeout(10_000)

    def with_csp(route):
        if route.request.resource_type != "document":
            route.continue_()
            return
        response = route.fetch()
        route.fulfill(response=response,
                      headers={**response.headers, "content-security-policy": CSP})

    page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url')})")
            if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
            else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Logged in first: a fulfilled response would carry its cookies in one header.
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#content-main")
    page.route(f"{live_server.url}/**", with_csp)
    page.goto(f"{live_server.url}{DASHBOARD}")
    page.wait_for_selector("[data-live-region]")
    return page


def pending_cell(page):
    return page.locator("[data-live-region=dashboard] tbody tr", has=page.locator(
        "th", has_text="default")).locator("td").first


def speed_up(page) -> None:
    """The page's period, shortened (live.js reads it before each wait)."""
    page.evaluate(f"document.querySelector('[data-live-control]')"
                  f".setAttribute('data-live-period', '{PERIOD_S}')")


def enqueue(n: int) -> None:
    for i in range(n):
        tasks.record.enqueue(f"live-{i}")


def test_live_refresh_under_a_strict_csp(live_server, admin_user, browser, settings):
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}
    enqueue(1)
    errors: list[str] = []
    page = open_page(browser, live_server, errors)
    toggle = page.locator("[data-live-toggle]")
    assert toggle.is_visible() and toggle.is_checked()
    assert page.locator("[data-live-status]").get_attribute("aria-live") == "polite"
    speed_up(page)
    toggle.uncheck()  # off and on again: the next wait uses the short period
    toggle.check()
    page.evaluate("window.notReloaded = true")

    enqueue(2)
    sync_api.expect(pending_cell(page)).to_have_text("3")
    assert page.evaluate("window.notReloaded") is True  # swapped in place, not reloaded

    toggle.uncheck()
    assert page.evaluate("localStorage.getItem('django_bgtasks.live')") == "off"
    enqueue(1)
    page.wait_for_timeout(QUIET_S * 1000)  # (not sleep: the route answers meanwhile)
    assert pending_cell(page).inner_text() == "3"

    # A list: a selected row is never refreshed away; once unselected, the list follows.
    page.goto(f"{live_server.url}{DASHBOARD}pending/?queue=default")
    toggle = page.locator("[data-live-toggle]")
    assert not toggle.is_checked()  # remembered
    speed_up(page)
    toggle.check()
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 4
    page.locator("input.action-select").first.check()
    page.locator("body").click(position={"x": 5, "y": 5})  # selected, no longer focused
    enqueue(1)
    page.wait_for_timeout(QUIET_S * 1000)  # (not sleep: the route answers meanwhile)
    assert rows.count() == 4 and page.locator("input.action-select").first.is_checked()
    page.locator("input.action-select").first.uncheck()
    page.locator("body").click(position={"x": 5, "y": 5})
    sync_api.expect(rows).to_have_count(5)
    page.locator("input.action-select").nth(1).check()  # Django's actions.js follows
    sync_api.expect(page.locator(".action-counter")).to_have_text("1 of 5 selected")

    assert errors == [], errors
    # The policy is in force: an inline script is refused (and reported).
    assert page.evaluate("""() => { const s = document.createElement('script');
        s.textContent = 'window.inlineRan = true'; document.head.append(s);
        return window.inlineRan === true; }""") is False


def test_no_refresh_when_reduced_motion_is_preferred(live_server, admin_user, browser,
                                                     settings):
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}
    enqueue(1)
    errors: list[str] = []
    page = open_page(browser, live_server, errors)
    page.emulate_media(reduced_motion="reduce")
    page.reload()
    assert not page.locator("[data-live-toggle]").is_checked()
    assert "reduced motion" in page.locator("[data-live-status]").inner_text()
    speed_up(page)
    enqueue(2)
    page.wait_for_timeout(QUIET_S * 1000)  # (not sleep: the route answers meanwhile)
    assert pending_cell(page).inner_text() == "1"
    assert errors == [], errors
