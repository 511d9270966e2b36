"""The workflows in the admin: the workflow page (facts, counts, progress, final members,
members paged), the list of recent workflows, the links from the dashboard and from a
member's task page, Cancel workflow (POST, CSRF, change permission, LogEntry),
permissions and escaping.

Workflows are enqueued through the public API and driven through claim and ack as a
worker would, their members' ends forwarded to the barrier as its forwarder does
(tests/support/workflow_steps.py)."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from test_admin import DASHBOARD, detail_url, login, make_user, messages_of

from demo.tasks import record, wf_collect, wf_report, wf_square, wf_step
from django_bgtasks import chain, chord, get_task_info, get_workflow, group
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.keys import WorkflowKeys
from helpers import wait_until
from workflow_steps import finish

pytestmark = pytest.mark.django_db

WORKFLOWS = "/admin/django_bgtasks/task/workflows/"


@pytest.fixture(autouse=True)
def enqueue_at_once(bgtasks_redis, settings):
    # Each test runs inside a transaction that never commits: enqueue must not wait for it.
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


@pytest.fixture
def root():
    return login(User.objects.create_superuser("root", "root@example.com", None))


def page_url(workflow_id: str, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{WORKFLOWS}{workflow_id}/" + (f"?{query}" if query else "")


def cancel_url(workflow_id: str) -> str:
    return f"{WORKFLOWS}{workflow_id}/cancel/"


def text(response) -> str:
    """The page's content, its tags and runs of white space made single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def squares_chord(n: int = 3):
    return chord(group(wf_square.s(i) for i in range(1, n + 1)), wf_collect.s("sum")).enqueue()


# -- the workflow page ------------------------------------------------------------------


def test_a_chord_page_follows_it_through_its_steps(root):
    info = squares_chord(3)
    group_ids = [f"{info.id}.{i}" for i in range(3)]
    callback = f"{info.id}.3"

    page = text(root.get(page_url(info.id)))
    assert "Shape chord(group(3 x wf_square), wf_collect)" in page
    assert "State running" in page
    assert "0 / 4 members ended (0%)" in page
    assert "Members by state pending: 3 · blocked: 1" in page
    assert f"Callback ID {callback}" in page and "State blocked" in page
    assert "not every member has ended" in page

    finish(group_ids, results={task_id: str((n + 1) ** 2) for n, task_id in
                               enumerate(group_ids)})
    response = root.get(page_url(info.id))
    page = text(response)
    assert "3 / 4 members ended (75%)" in page
    assert "Members by state pending: 1 · completed: 3" in page
    assert '<progress max="4" value="3">' in response.content.decode()
    assert get_task_info(callback).args == [[1, 4, 9], "sum"]

    finish([callback], results={callback: "14"})
    response = root.get(page_url(info.id))
    html, page = response.content.decode(), text(response)
    assert "State succeeded" in page and "4 / 4 members ended (100%)" in page
    assert "Members by state completed: 4" in page
    assert "not every member has ended" not in page
    final = html[html.index("<h2>Callback</h2>"):]
    final = final[:final.index("</table>")]
    assert "demo.tasks.wf_collect" in final and "<strong>completed</strong>" in final
    assert "<pre>14</pre>" in final  # its result, as a task page shows it
    # every member, linked to its task page, with its step, role, queue and state
    rows = re.findall(r'<td class="num">(\d+)</td>\s*<td><a href="([^"]+)">([^<]+)'
                      r"</a></td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>"
                      r"\s*<td>([^<]*)</td>", html)
    assert rows == [
        (str(i), f"{detail_url(f'{info.id}.{i}')}?queue=default", f"{info.id}.{i}",
         "1" if i == 3 else "0", "callback" if i == 3 else "member", "default", "completed")
        for i in range(4)]
    assert 'value="Cancel workflow"' not in html and "Cancel workflow" not in html  # ended


def test_a_failed_chain_shows_the_reason_and_on_complete(root):
    info = chain(wf_step.s(1, "a"), wf_step.s("b")).on_complete(wf_report.s("r")).enqueue()
    finish([f"{info.id}.0"], "dead", error="ValueError: a fails")
    page = text(root.get(page_url(info.id)))
    assert f"State failed : {info.id}.0 ended dead: ValueError: a fails" in page
    assert f"Last link ID {info.id}.1" in page and "State cancelled" in page
    assert f"Cancelled by workflow {info.id}: {info.id}.0 ended dead" in page
    assert f"On complete ID {info.id}.2" in page
    assert "Members by state pending: 1 · dead: 1 · cancelled: 1" in page


def test_members_are_listed_100_a_page(root):
    info = group(record.s(f"t{i}") for i in range(250)).enqueue()
    first = root.get(page_url(info.id))
    last = root.get(page_url(info.id, page=3))
    assert first.context["page"].paginator.num_pages == 3
    assert [m.index for m, _ in first.context["members"]] == list(range(100))
    assert [m.index for m, _ in last.context["members"]] == list(range(200, 250))
    assert f'href="{page_url(info.id, page=2)}"' in first.content.decode()
    assert "members 201–250 of 250" in text(last)


@pytest.mark.single_redis(reason="counts the commands one server processed")
def test_the_page_costs_a_bounded_number_of_commands(root, raw):
    def commands(url: str) -> int:
        before = int(raw.info("stats")["total_commands_processed"])
        assert root.get(url).status_code == 200
        return int(raw.info("stats")["total_commands_processed"]) - before - 1

    small = squares_chord(20)
    big = squares_chord(2000)
    at_small, at_big = commands(page_url(small.id)), commands(page_url(big.id))
    # read in chunks of 1,000 members: two more chunks, not 1,980 more commands
    assert at_small <= 40 and at_big <= at_small + 6, (at_small, at_big)


def test_an_unknown_or_malformed_workflow_id_is_not_found(root):
    for workflow_id in ("0" * 32, "not.an.id"):
        response = root.get(page_url(workflow_id))
        assert response.status_code == 302 and response.url == WORKFLOWS
        assert f"No workflow with id “{workflow_id}”" in messages_of(response)[-1]


def test_a_dependency_gate_shows_its_dependent_and_cancels_only_it(root):
    first = record.using(run_after=3600).enqueue("first")
    after = record.using(depends_on=[first.id]).enqueue("after")
    [gate] = get_task_info(after.id).workflows
    html = root.get(page_url(gate)).content.decode()
    assert "dependency gate" in html and "<h2>Dependent task</h2>" in html
    assert f'<a href="{detail_url(after.id)}?queue=default">{after.id}</a>' in html
    assert "Cancel workflow" in html
    response = root.post(cancel_url(gate))
    assert response.status_code == 302 and "cancelled" in messages_of(response)[-1]
    assert get_task_info(after.id).state == "cancelled"
    assert get_task_info(first.id).state == "scheduled"  # not the gate's to cancel
    html = root.get(page_url(gate)).content.decode()
    assert "Cancel workflow" not in html  # cancelled already
    again = root.post(cancel_url(gate))
    assert "it was cancelled already, so there was nothing to cancel" in \
        messages_of(again)[-1]
    assert LogEntry.objects.count() == 1


# -- the list, the links ----------------------------------------------------------------


def next_ms() -> None:
    """Wait for Redis' clock to pass a millisecond: the list orders by creation time."""
    now = get_broker().server_time_ms()
    wait_until(lambda: get_broker().server_time_ms() > now, timeout=5)


def test_the_list_shows_the_newest_first_and_skips_those_gone(root, raw):
    older = squares_chord(2)
    next_ms()
    gone = group([record.s("x")]).enqueue()
    next_ms()
    newer = chain(wf_step.s(1, "a"), wf_step.s("b")).enqueue()
    raw.delete(WorkflowKeys(get_broker().keys.prefix, gone.id).barrier)  # kept time over

    response = root.get(WORKFLOWS)
    assert [info.id for info, _ in response.context["rows"]] == [newer.id, older.id]
    html = response.content.decode()
    assert f'href="{page_url(newer.id)}"' in html
    assert f"<code>{newer.shape}</code>" in html
    assert f'href="{WORKFLOWS}"' in root.get(DASHBOARD).content.decode()


def test_the_list_shows_at_most_100(root):
    oldest = group([record.s("first")]).enqueue().id
    next_ms()
    ids = {group([record.s(i)]).enqueue().id for i in range(100)}
    rows = root.get(WORKFLOWS).context["rows"]
    assert {info.id for info, _ in rows} == ids and oldest not in ids


def test_a_task_page_links_its_workflows(root):
    info = chain(record.s("one"), record.s("two")).enqueue()
    html = root.get(detail_url(f"{info.id}.1")).content.decode()
    assert f'<a href="{page_url(info.id)}">{info.id}</a>' in html
    plain = record.enqueue("alone")
    assert "Workflow" not in text(root.get(detail_url(plain.id)))


# -- cancel, permissions ----------------------------------------------------------------


def test_cancel_workflow_needs_change_permission_post_and_csrf(root):
    info = squares_chord(3)
    viewer = login(make_user("viewer", "view"))
    assert "Cancel workflow" not in viewer.get(page_url(info.id)).content.decode()
    assert viewer.post(cancel_url(info.id)).status_code == 403
    changer = login(make_user("changer", "view", "change"))
    assert changer.get(cancel_url(info.id)).status_code == 405
    csrf = login(make_user("csrf", "view", "change"), enforce_csrf_checks=True)
    assert csrf.post(cancel_url(info.id)).status_code == 403
    assert get_workflow(info.id).state == "running" and LogEntry.objects.count() == 0

    html = changer.get(page_url(info.id)).content.decode()
    assert f'action="{cancel_url(info.id)}"' in html and "csrfmiddlewaretoken" in html
    response = changer.post(cancel_url(info.id))
    assert response.status_code == 302 and response.url == page_url(info.id)
    assert "Members now: 4 cancelled" in messages_of(response)[0]
    assert get_workflow(info.id).state == "cancelled"
    assert get_task_info(f"{info.id}.0").cancelled_by == f"workflow {info.id} cancelled: changer"
    [entry] = LogEntry.objects.all()
    assert (entry.object_id, entry.action_flag, entry.change_message,
            entry.user.username) == (info.id, CHANGE, "Cancelled workflow", "changer")
    # its history link (a task's URL, as LogEntry builds it) opens the workflow's page
    opened = changer.get(entry.get_admin_url())
    assert opened.status_code == 302 and opened.url == page_url(info.id)

    again = changer.post(cancel_url(info.id))  # every member ended now
    assert "nothing to cancel" in messages_of(again)[-1]
    assert LogEntry.objects.count() == 1


def test_pages_need_staff_and_the_view_permission(root):
    info = squares_chord(2)
    urls = [WORKFLOWS, page_url(info.id)]
    outsider = login(make_user("outsider", "view", "change", staff=False))
    for url in urls:
        response = outsider.get(url)
        assert response.status_code == 302 and "/login/" in response.url
    assert outsider.post(cancel_url(info.id)).status_code == 302
    nobody = login(make_user("nobody"))  # staff, no permission of the app
    for url in urls:
        assert nobody.get(url).status_code == 403
    assert nobody.post(cancel_url(info.id)).status_code == 403
    assert get_workflow(info.id).state == "running"


# -- escaping ---------------------------------------------------------------------------


def test_script_in_results_and_errors_is_shown_as_text(root):
    info = chain(wf_step.s("<script>alert(1)</script>", "a"), wf_step.s("b")).on_complete(
        wf_report.s("r")).enqueue()
    first, last = f"{info.id}.0", f"{info.id}.1"
    finish([first], results={first: '["<script>alert(1)</script>", "a"]'})
    finish([last], "dead", error="ValueError: <script>alert(2)</script>")
    for url in (page_url(info.id), WORKFLOWS):
        html = root.get(url).content.decode()
        assert "<script>alert(" not in html
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html  # the failure's reason
    html = root.get(page_url(info.id)).content.decode()
    assert "Last error</th><td>ValueError: &lt;script&gt;alert(2)" in html
    # a result holding a script: the on_complete's argument lists the failure
    on_complete = f"{info.id}.2"
    finish([on_complete], results={on_complete: '"<script>alert(3)</script>"'})
    html = root.get(page_url(info.id)).content.decode()
    assert "<script>alert(" not in html
    assert "&quot;&lt;script&gt;alert(3)&lt;/script&gt;&quot;" in html
