"""``manage.py bgtasks workflow ID [--json] [--cancel]`` and ``bgtasks workflows``: the
same facts as the admin's workflow pages, against the real Redis of conftest.py.

Workflows are enqueued through the public API and driven through claim and ack as a
worker would (tests/support/workflow_steps.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from demo.tasks import record, wf_collect, wf_report, wf_square, wf_step
from django_bgtasks import chain, chord, get_task_info, get_workflow, group
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.keys import WorkflowKeys
from helpers import MANAGE_PY, REPO_ROOT, BgtasksCommand, wait_until
from workflow_steps import finish

run = BgtasksCommand()
run_json = run.json
fails = run.error


@pytest.fixture(autouse=True)
def enqueue_at_once(bgtasks_redis, settings):
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


def squares_chord(n: int = 3):
    return chord(group(wf_square.s(i) for i in range(1, n + 1)), wf_collect.s("sum")).enqueue()


def field(out: str, name: str) -> str:
    """The value of a 'name:   value' line of the text."""
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith(f"{name}:"))


def test_workflow_text_shows_the_facts_the_callback_and_the_members():
    info = squares_chord(3)
    group_ids = [f"{info.id}.{i}" for i in range(3)]
    out = run("workflow", info.id)
    assert field(out, "shape") == "chord(group(3 x wf_square), wf_collect)"
    assert field(out, "state") == "running"
    assert field(out, "progress") == "0 of 4 members ended (0%)"
    assert field(out, "by state") == "pending 3, blocked 1"
    assert field(out, "finished at") == "-"

    finish(group_ids, results={task_id: str((n + 1) ** 2) for n, task_id in
                               enumerate(group_ids)})
    finish([f"{info.id}.3"], results={f"{info.id}.3": "14"})
    out = run("workflow", info.id)
    assert field(out, "state") == "succeeded"
    assert field(out, "progress") == "4 of 4 members ended (100%)"
    assert field(out, "by state") == "completed 4"
    assert field(out, "finished at").endswith("(now)")
    assert field(out, "callback") == (f"{info.id}.3 (demo.tasks.wf_collect, queue 'default'): "
                                      f"completed, result: 14")
    rows = [line.split() for line in out.splitlines() if line.startswith(tuple("0123"))]
    assert rows == [[str(i), f"{info.id}.{i}", "1" if i == 3 else "0",
                     "callback" if i == 3 else "member", "default", "completed"]
                    for i in range(4)]
    assert out.rstrip().endswith("Listed every member.")


def test_workflow_text_lists_50_members_unless_told():
    info = group(record.s(i) for i in range(120)).enqueue()
    out = run("workflow", info.id)
    assert f"{info.id}.49 " in out and f"{info.id}.50 " not in out
    assert "Listed 50 of 120 members (--limit N for more, --json for all)." in out
    out = run("workflow", info.id, "--limit", "0")
    assert f"{info.id}.0 " not in out and "Listed 0 of 120 members" in out
    assert "--limit must be 0 or more" in fails("workflow", info.id, "--limit", "-1")


def test_workflow_json_has_every_member_and_the_final_ones():
    info = chain(wf_step.s(1, "a"), wf_step.s("b")).on_complete(wf_report.s("r")).enqueue()
    finish([f"{info.id}.0"], "dead", error="ValueError: a fails")
    data = run_json("workflow", info.id)
    assert {k: data[k] for k in ("id", "kind", "shape", "size", "state", "counts", "ended",
                                 "on_complete", "callback_id", "steps")} == {
        "id": info.id, "kind": "workflow", "size": 3,
        "shape": "chain(wf_step, wf_step).on_complete(wf_report)",
        "state": "failed", "counts": {"pending": 1, "dead": 1, "cancelled": 1}, "ended": 2,
        "on_complete": 2, "callback_id": f"{info.id}.1", "steps": [[0, 1, False], [1, 1, False]]}
    assert data["reason"] == f"{info.id}.0 ended dead: ValueError: a fails"
    assert data["created_at"].endswith("Z") and data["finished_at"] is None
    assert data["progress"] == round(2 / 3, 4)
    assert [(m["index"], m["role"], m["step"], m["state"]) for m in data["members"]] == [
        (0, "member", 0, "dead"), (1, "callback", 1, "cancelled"),
        (2, "on_complete", "fin", "pending")]
    last, on_complete = data["finals"]
    assert (last["label"], last["id"], last["state"], last["name"]) == (
        "Last link", f"{info.id}.1", "cancelled", "demo.tasks.wf_step")
    assert last["cancelled_by"].startswith(f"workflow {info.id}: {info.id}.0 ended dead")
    assert (on_complete["label"], on_complete["state"], on_complete["result"]) == (
        "On complete", "pending", None)

    finish([f"{info.id}.2"], results={f"{info.id}.2": '{"succeeded": 0, "failed": 2}'})
    [_, on_complete] = run_json("workflow", info.id)["finals"]
    assert on_complete["result"] == {"succeeded": 0, "failed": 2}
    assert on_complete["result_bytes"] == len('{"succeeded": 0, "failed": 2}')


def test_workflow_json_lists_all_members():
    info = group(record.s(i) for i in range(120)).enqueue()
    data = run_json("workflow", info.id)
    assert [m["id"] for m in data["members"]] == [f"{info.id}.{i}" for i in range(120)]


def test_an_unknown_workflow_is_an_error_that_says_so():
    assert fails("workflow", "0" * 32) == (
        f"no workflow with id {'0' * 32!r} (never enqueued, or kept past "
        f"BGTASKS['WORKFLOW_KEEP'])")
    assert "a workflow id is 1-64 letters" in fails("workflow", "not.an.id")
    assert "no workflow with id" in fails("workflow", "0" * 32, "--cancel")


def test_an_unknown_workflow_exits_non_zero():
    env = {**os.environ, "BGTASKS_DEMO_DB": os.devnull}
    result = subprocess.run([sys.executable, str(MANAGE_PY), "bgtasks", "workflow", "0" * 32],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 1
    assert "CommandError: no workflow with id" in result.stderr


def test_cancel_cancels_the_members_not_started_and_says_so():
    info = squares_chord(3)
    out = run("workflow", info.id, "--cancel")
    assert out.startswith(f"Cancelled workflow {info.id}: its members not started are "
                          "cancelled, running ones are asked to stop.")
    assert field(out, "state").startswith("cancelled: ")  # the reason: who cancelled it
    assert field(out, "by state") == "cancelled 4"
    assert get_workflow(info.id).state == "cancelled"
    by = get_task_info(f"{info.id}.0").cancelled_by
    assert by.startswith(f"workflow {info.id} cancelled: ")
    assert by.endswith("(bgtasks workflow --cancel)")

    out = run("workflow", info.id, "--cancel")  # every member ended now
    assert out.startswith(f"Nothing to cancel: workflow {info.id} had ended")
    assert run_json("workflow", info.id, "--cancel")["cancelled"] is False


def test_a_dependency_gate_shows_its_dependent_and_cancels_only_it():
    first = record.using(run_after=3600).enqueue("first")
    after = record.using(depends_on=[first.id]).enqueue("after")
    [gate] = get_task_info(after.id).workflows
    data = run_json("workflow", gate)
    assert data["kind"] == "dependencies" and data["ids"] == [first.id, after.id]
    assert [(f["label"], f["id"], f["state"]) for f in data["finals"]] == [
        ("Dependent task", after.id, "blocked")]
    assert [m["role"] for m in data["members"]] == ["dependency", "member"]
    out = run("workflow", gate, "--cancel")
    assert out.startswith(f"Cancelled workflow {gate}")
    assert get_task_info(after.id).state == "cancelled"
    assert get_task_info(first.id).state == "scheduled"
    assert run("workflow", gate, "--cancel").startswith(
        f"Nothing to cancel: workflow {gate} was cancelled already")


def next_ms() -> None:
    """Wait for Redis' clock to pass a millisecond: the list orders by creation time."""
    now = get_broker().server_time_ms()
    wait_until(lambda: get_broker().server_time_ms() > now, timeout=5)


def test_workflows_lists_the_newest_first(raw):
    assert run("workflows").startswith("No workflow is kept")
    mail = wf_square.using(queue_name="mail")  # default's pending tasks: newer's alone
    older = chord(group([mail.s(1), mail.s(2)]), wf_collect.s("sum")).enqueue()
    next_ms()
    gone = group([mail.s(3)]).enqueue()
    next_ms()
    newer = chain(wf_step.s(1, "a"), wf_step.s("b")).enqueue()
    finish([f"{newer.id}.0"], "dead", error="ValueError: a fails")
    raw.delete(WorkflowKeys(get_broker().keys.prefix, gone.id).barrier)  # kept time over

    out = run("workflows")
    lines = out.splitlines()
    assert lines[0].split() == ["id", "kind", "shape", "state", "ended", "size", "created",
                                "finished"]
    assert [line.split()[0] for line in lines[2:]] == [newer.id, older.id]
    assert f"failed: {newer.id}.0 ended dead" in lines[2]
    data = run_json("workflows")
    assert [(w["id"], w["state"], w["ended"], w["size"]) for w in data["workflows"]] == [
        (newer.id, "failed", 2, 2), (older.id, "running", 0, 3)]
    assert [w["id"] for w in run_json("workflows", "--limit", "1")["workflows"]] == [newer.id]
    assert "--limit must be between 0 and 100" in fails("workflows", "--limit", "101")


def test_escapes_in_stored_text_do_not_reach_the_terminal():
    info = chain(wf_step.s(1, "a"), wf_step.s("b")).enqueue()
    finish([f"{info.id}.0"], "dead", error="ValueError: \x1b]0;pwned\x07 \u202e")
    out = run("workflow", info.id)
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b]0;pwned\\x07 \\u202e" in field(out, "state")
    assert json.loads(run("workflow", info.id, "--json"))["reason"].endswith(
        "\x1b]0;pwned\x07 \u202e")
