"""Bad data in Redis: whatever bytes sit in a task's hashes, or whatever its id is, no
transition fails inside Redis, no read raises, and a task that cannot run ends dead with
a readable error (docs/design.md, "Task lifecycle").

Hypothesis writes garbage over one stored field of a task seeded in a given state, then
drives the real Lua transitions through RedisBroker as the worker and the admin do; the
last tests take a few such records through the admin pages, the CLI and a real worker.
"""

from __future__ import annotations

import io
import json
import math
from urllib.parse import urlencode

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo import recording
from demo import tasks as demo_tasks
from django_bgtasks import SkipRetry, TaskNotFound, background_task, get_task_info
from django_bgtasks.broker.keys import STATES
from django_bgtasks.broker.types import Ack, EnqueueRequest, Retention
from django_bgtasks.exceptions import InvalidTaskMessage
from django_bgtasks.management import cli_format
from django_bgtasks.message import TaskMessage
from django_bgtasks.ops import display
from django_bgtasks.ops.inspect import Inspector
from django_bgtasks.worker.execution import TaskExecutor
from helpers import wait_until

Q = "default"
TID = "t-1"
HOUR_MS = 3_600_000
PAST = 1_000_000  # a score (ms since the epoch) long gone
DEAD_MAX, DEAD_AGE_MS = 10_000, 180 * 24 * HOUR_MS
MISSING = None  # as a stored field's value: the field is deleted
EXECUTOR = TaskExecutor("bad-data-test")
FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@background_task
def job(outcome: str = "ok") -> str:
    """Succeeds, fails (retry) or skips its retries (dead): a worker's three outcomes."""
    if outcome == "fail":
        raise RuntimeError("failed on purpose")
    if outcome == "skip":
        raise SkipRetry("skipped on purpose")
    return outcome


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity allowed: cjson reads them too


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def message(task_id: str = TID, outcome: str = "ok") -> dict:
    return json.loads(TaskMessage(
        id=task_id, name=job.name, queue=Q, args=[outcome], kwargs={}, priority=0,
        max_retries=3, timeout=60.0, result_ttl=None, unique_key=None, enqueued_at=1.0,
    ).encode())


RECORD = {"state": "pending", "attempts": 0, "max_retries": 3, "priority": 0,
          "enqueued_at": 1_700_000_000_000, "run_after": 1_700_000_000_000,
          "expires_at": 4_000_000_000_000}  # damaged, it may expire the task: never break
HISTORY = [{"attempt": 1, "at": 1_700_000_000_000, "error": "E: x", "traceback": "",
            "worker": "w"}]


# -- strategies -----------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(["", "<script>alert(1)</script>", '"><b>x', "\x00\n\t", "é€𝄞",
                              "\ud800"])
ODD_NUMBERS = st.sampled_from([-1, 0.5, 10**20, 2**53 + 1, 10**400, 1e308, -1e308,
                               math.nan, math.inf, -math.inf, True])
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ODD_NUMBERS
    | st.text(max_size=12) | NASTY_TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                               max_size=3),
    max_leaves=6)
SPECIAL = st.sampled_from([
    b"", b"null", b"true", b"0", b"-1", b'"text"', b"[]", b"{}", b"[1, 2]", b"NaN",
    b"Infinity", b"1e999", b"9" * 400, b"0x10", b"\xff\xfe\x00", b"\xff\x00garbage{",
    b"[" * 5000, b'{"a":' * 3000, b"[" * 900 + b"]" * 900, b"<script>alert(1)</script>",
    b'{"state": "\xff"}',
    b'{"attempts": NaN, "state": "pending", "max_retries": 1, "priority": 0}',
])


class Removed:
    """A field's new value in reshaped(): no field at all (JSON null is another case)."""

    def __repr__(self) -> str:
        return "REMOVED"


REMOVED = Removed()


def reshaped(base: dict | list) -> st.SearchStrategy[bytes]:
    """``base`` with a few fields replaced by arbitrary JSON (or removed)."""
    if isinstance(base, list):
        return st.lists(st.dictionaries(st.sampled_from(sorted(base[0])), ANY_JSON)
                        | ANY_JSON, max_size=12).map(dumps)
    changes = st.dictionaries(st.sampled_from(sorted(base)), ANY_JSON | st.just(REMOVED),
                              min_size=1, max_size=3)
    return changes.map(lambda c: dumps(
        {k: v for k, v in {**base, **c}.items() if v is not REMOVED}))


def garbage(base: dict | list) -> st.SearchStrategy[bytes | None]:
    return st.one_of(st.binary(max_size=80), SPECIAL, ANY_JSON.map(dumps), reshaped(base),
                     reshaped(base), st.just(MISSING))


CORRUPTION = st.one_of(*(st.tuples(st.just(field), garbage(base)) for field, base in (
    ("msg", message()), ("info", RECORD), ("errors", HISTORY), ("result", {"a": 1}))))
OUTCOMES = st.sampled_from(["ok", "fail", "skip"])


# -- seeding and driving --------------------------------------------------------------------


def reset(raw, broker) -> None:
    """Each example starts from an empty Redis (the autouse fixture flushes per test)."""
    raw.flushdb()
    raw.sadd(broker.keys.queues, Q)


def claim(broker, acks=(), limit: int = 10):
    return broker.claim(Q, "test-host", list(acks), limit, 30_000, DEAD_MAX, DEAD_AGE_MS)


# A concurrency limit of 1 (limit id, concurrency, rate count, rate period ms): while
# BLOCKER runs under it, a claimed task with the same limit waits.
ONE_AT_A_TIME = json.dumps([["bad-data", 1, 0, 0]])
BLOCKER = "t-blocker"


def seed(broker, state: str, outcome: str = "ok", unique: bool = False,
         task_id: str = TID) -> None:
    """A task in ``state``, taken there by the transitions a worker uses. A waiting one
    waits for BLOCKER (active, under the same limit) to end."""
    limits = ONE_AT_A_TIME if state == "waiting" else ""
    if state == "waiting":
        broker.enqueue(EnqueueRequest(Q, BLOCKER, json.dumps(message(BLOCKER)), 0, 3,
                                      limits=limits))
        assert [c.id for c in claim(broker, limit=1).claimed] == [BLOCKER]
    broker.enqueue(EnqueueRequest(
        Q, task_id, json.dumps(message(task_id, outcome)), 0, 3,
        delay_ms=HOUR_MS if state in ("scheduled", "cancelled") else None,
        unique_key="lock" if unique else None, unique_ttl_ms=HOUR_MS, limits=limits,
        expires="@1000" if state == "expired" else "",
        # blocked: a workflow member waiting for its step (its barrier need not exist)
        workflow='[["bad-data-wf",1]]' if state == "blocked" else "",
        blocked=state == "blocked"))
    if state == "expired":
        assert claim(broker, limit=1).expired == [task_id]
    if state == "waiting":
        assert claim(broker, limit=1).claimed == []
        assert broker.client.zscore(broker.queue_keys(Q).waiting, task_id) is not None
    if state == "cancelled":
        assert broker.cancel(Q, [task_id], "seeder").cancelled == [task_id]
    if state in ("active", "retry", "dead", "completed"):
        [claimed] = claim(broker, limit=1).claimed
        ack = {"retry": Ack(task_id, 1, "retry", delay_ms=HOUR_MS, error="RuntimeError: x"),
               "dead": Ack(task_id, 1, "dead", error="RuntimeError: x", traceback="Trace"),
               "completed": Ack(task_id, 1, "done", result='{"a": 1}', result_ttl_ms=HOUR_MS),
               }.get(state)
        if ack:
            assert claim(broker, [ack], limit=0).ignored == []


def overwrite(raw, broker, field: str, value: bytes | None, task_id: str | bytes = TID) -> None:
    key = getattr(broker.queue_keys(Q), field)
    if value is MISSING:
        raw.hdel(key, task_id)
    else:
        raw.hset(key, task_id, value)


def work(broker) -> None:
    """Claim, decode and run like a worker until the queue hands out nothing more."""
    acks: list[Ack] = []
    for _ in range(4):
        result = claim(broker, acks)
        assert result.ignored == [], "an ack did not reach its task"
        acks = []
        for claimed in result.claimed:
            msg = EXECUTOR.decode(claimed)
            acks.append(msg if isinstance(msg, Ack) else EXECUTOR.run(claimed, msg))
        if not acks:
            return
    raise AssertionError("the queue kept handing out tasks")


def advance(raw, broker, state: str, worker_died: bool = False) -> None:
    """Take TID out of ``state`` the way its transition does, then work the queue. An
    active task comes back when its lease expires, or at once when its worker died."""
    keys = broker.queue_keys(Q)
    if state in ("scheduled", "retry"):
        raw.zadd(getattr(keys, state), {TID: PAST}, xx=True)
        broker.forward_due(Q)
    elif state == "active":
        if worker_died:
            broker.release_worker(Q, "test-host", "WorkerLost: died", DEAD_MAX, DEAD_AGE_MS)
        raw.zadd(keys.active, {TID: PAST}, xx=True)  # what release left to the lease
        broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    elif state == "dead":
        assert broker.requeue(Q, [TID]) == [TID]
    elif state == "completed":
        raw.zadd(keys.completed, {TID: PAST}, xx=True)
        broker.clean(Q, DEAD_MAX, DEAD_AGE_MS)
    elif state == "expired":  # kept until its retention ends
        raw.zadd(keys.expired, {TID: PAST}, xx=True)
        broker.clean(Q, DEAD_MAX, DEAD_AGE_MS, expired=Retention(DEAD_MAX, DEAD_AGE_MS))
    elif state == "waiting":  # BLOCKER's run ends: the limit wakes TID
        assert claim(broker, [Ack(BLOCKER, 1, "done")], limit=0).ignored == []
    elif state == "cancelled":  # cancelled again: nothing changes
        assert broker.cancel(Q, [TID]).finished == {TID: "cancelled"}
    elif state == "blocked":  # its workflow releases it, with the previous step's result
        broker._run("wf_release", Q, [broker.keys.wake_channel, "workflow bad-data-wf:",
                                      '{"from": "step 0"}', TID])
    work(broker)


# -- oracles --------------------------------------------------------------------------------


def readable(text: object) -> bool:
    return isinstance(text, str) and bool(text.strip()) and text.isprintable() \
        and len(text) <= 2_100


def message_refused(value: bytes | None, task_id: str = TID) -> bool:
    """True when the worker must not run this stored message as task ``task_id``."""
    try:
        return TaskMessage.decode(value).id != task_id
    except InvalidTaskMessage:
        return True


def _whole(v: object, below: float = math.inf) -> bool:
    try:
        return not isinstance(v, bool) and isinstance(v, int | float) \
            and float(v).is_integer() and 0 <= v < below
    except OverflowError:
        return False


RECORD_RULES = {
    "state": lambda v: isinstance(v, str) and v in STATES,
    "attempts": lambda v: _whole(v, 1e9),
    "max_retries": _whole,
    "priority": lambda v: not isinstance(v, bool) and isinstance(v, int | float)
    and -100 <= v <= 100,
}


def record_sound(value: bytes | None) -> bool | None:
    """Whether the scripts accept this record; None when Python's json and Redis' cjson
    may read the bytes differently (cjson takes hex numbers, invalid UTF-8...)."""
    if value is MISSING:
        return False
    try:
        data = json.loads(value.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return isinstance(data, dict) and all(rule(data.get(k)) for k, rule in RECORD_RULES.items())


def sets_of(raw, broker, task_id: str | bytes) -> list[str]:
    keys = broker.queue_keys(Q)
    return [s for s in STATES if raw.zscore(getattr(keys, s), task_id) is not None]


def settled(raw, broker) -> str | None:
    """TID's one state after working the queue (None: wholly gone); its record agrees."""
    sets = sets_of(raw, broker, TID)
    if not sets:
        keys = broker.queue_keys(Q)
        assert raw.hget(keys.msg, TID) is None and raw.hget(keys.info, TID) is None
        return None
    assert len(sets) == 1 and sets[0] not in ("pending", "active"), sets
    info = get_task_info(TID)
    assert info.state == sets[0], (info.state, sets)
    if info.state in ("retry", "dead"):
        assert readable(info.last_error), info.last_error
        assert isinstance(json.loads(raw.hget(broker.queue_keys(Q).errors, TID)), list)
    return info.state


def read_everything(broker, task_id: str = TID) -> None:
    """Every read the admin and the CLI make: none may raise, whatever Redis holds."""
    insp = Inspector(broker)
    insp.stats()
    for state in STATES:
        rows = insp.tasks(state, Q)[0:50] + insp.tasks(state)[0:50]
        rows += insp.find_by_name(state, "job", Q)[0]
        for row in rows:
            cli_format.call_args(row.summary)
            cli_format.to_json(cli_format.row_data(row))
        if rows:
            cli_format.list_text(rows, state)
    insp.find(task_id, Q)
    detail = insp.detail(task_id, Q)
    if detail is not None:
        display.pretty_json(detail.info.args)
    info = insp.get(task_id, Q)
    if info is not None:
        cli_format.show_text(info)
        cli_format.to_json(cli_format.task_data(info))
    try:
        get_task_info(task_id)
    except TaskNotFound:
        pass


# -- broker level ---------------------------------------------------------------------------

# The worker's run() closes stale database connections: allowed, as in a worker process.
needs_db = pytest.mark.django_db


@needs_db
@FAST
@given(case=CORRUPTION, outcome=OUTCOMES, unique=st.booleans())
@example(case=("msg", b"\xff\x00garbage{"), outcome="ok", unique=False)
@example(case=("info", b'{"attempts": NaN, "state": "pending", "max_retries": 1, '
                       b'"priority": 0}'), outcome="ok", unique=False)
@example(case=("info", dumps({**RECORD, "unique_key": True})), outcome="skip", unique=True)
@example(case=("msg", dumps({**message(), "result_ttl": "x"})), outcome="ok", unique=False)
@example(case=("msg", dumps({**message(), "id": "another"})), outcome="ok", unique=False)
@example(case=("msg", dumps({**message(), "args": nested(900)})), outcome="ok", unique=False)
def test_pending_task_with_a_corrupt_field_runs_or_ends_dead_readably(
        broker, raw, case, outcome, unique):
    field, value = case
    reset(raw, broker)
    seed(broker, "pending", outcome, unique)
    overwrite(raw, broker, field, value)
    read_everything(broker)
    work(broker)
    read_everything(broker)
    expect_outcome(raw, broker, field, value, outcome)


def expect_outcome(raw, broker, field: str, value: bytes | None, outcome: str) -> None:
    """A message or record the task cannot run with: dead, saying why. Anything else: the
    task's own outcome, whatever its error history or stored result held."""
    state = settled(raw, broker)
    last_error = get_task_info(TID).last_error if state else ""
    if field == "msg" and message_refused(value):
        assert state == "dead" and last_error.startswith("InvalidTaskMessage: "), last_error
    elif field == "info" and record_sound(value) is False:
        assert state == "dead" and last_error.startswith("InvalidTaskRecord: "), last_error
    elif field in ("errors", "result"):
        assert state == {"ok": None, "fail": "retry", "skip": "dead"}[outcome]
    elif field == "msg" and value == dumps(message()):  # the sound message of an "ok" run
        assert state is None


@needs_db
@pytest.mark.parametrize("state", [s for s in STATES if s != "pending"])
@settings(FAST, max_examples=60)
@given(case=CORRUPTION, outcome=OUTCOMES, worker_died=st.booleans())
def test_corrupt_field_in_every_other_state_never_breaks_its_transition(
        broker, raw, state, case, outcome, worker_died):
    field, value = case
    reset(raw, broker)
    seed(broker, state, outcome)
    overwrite(raw, broker, field, value)
    read_everything(broker)
    advance(raw, broker, state, worker_died)
    read_everything(broker)
    if state in ("completed", "expired"):
        assert sets_of(raw, broker, TID) == []  # its expiry removed it, whatever it held
    elif state == "cancelled":
        assert sets_of(raw, broker, TID) == ["cancelled"]  # it ended, whatever it holds
    else:
        expect_outcome(raw, broker, field, value, outcome)


@needs_db
@settings(FAST, max_examples=80)
@given(state=st.sampled_from(["pending", "scheduled", "retry", "waiting", "active"]),
       case=CORRUPTION)
def test_cancel_ends_a_corrupt_queued_task_and_never_breaks(broker, raw, state, case):
    field, value = case
    reset(raw, broker)
    seed(broker, state)
    overwrite(raw, broker, field, value)

    result = broker.cancel(Q, [TID], "ops")

    read_everything(broker)
    if state != "active":
        assert result.cancelled == [TID] and sets_of(raw, broker, TID) == ["cancelled"]
        info = json.loads(raw.hget(broker.queue_keys(Q).info, TID))
        assert info["state"] == "cancelled" and info["cancel"]["by"] == "ops"
        assert get_task_info(TID).state == "cancelled"
    else:  # asked to stop, or (a record too damaged to carry it) left as it is
        assert sets_of(raw, broker, TID) == ["active"]
        assert result.requested == [TID] or result.finished == {TID: "active"}
    work(broker)  # nothing of it runs
    assert sets_of(raw, broker, TID) == ["cancelled" if state != "active" else "active"]


@settings(FAST, max_examples=80)
@given(state=st.sampled_from(STATES), case=CORRUPTION)
def test_delete_removes_a_corrupt_task_unless_it_runs(broker, raw, state, case):
    reset(raw, broker)
    seed(broker, state)
    overwrite(raw, broker, *case)
    deleted, refused = broker.delete(Q, [TID])
    if state == "active":
        assert (deleted, refused) == ([], [TID]) and sets_of(raw, broker, TID) == ["active"]
    else:
        assert (deleted, refused) == ([TID], [])
        assert sets_of(raw, broker, TID) == []
        keys = broker.queue_keys(Q)
        assert not any(raw.hexists(getattr(keys, f), TID)
                       for f in ("msg", "info", "errors", "result"))
    broker.clean(Q, DEAD_MAX, DEAD_AGE_MS)
    read_everything(broker)


ODD_IDS = st.one_of(
    st.binary(max_size=40), st.text(max_size=20).map(str.encode),
    st.integers(10_000, 100_000).map(lambda n: b"L" * n),
    st.sampled_from([b"", b" ", b"\n", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                     "é".encode(), b"a/b%2F..", b"<b>x</b>", b"default:x"]))


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@needs_db
@settings(FAST, max_examples=150)
@given(task_id=ODD_IDS, state=st.sampled_from(["pending", "scheduled", "retry", "active"]),
       with_msg=st.booleans(), with_info=st.booleans())
@example(task_id=b"\xff", state="pending", with_msg=True, with_info=True)
def test_odd_ids_in_a_queue_run_or_end_dead_readably(broker, raw, task_id, state, with_msg,
                                                     with_info):
    reset(raw, broker)
    keys = broker.queue_keys(Q)
    raw.zadd(getattr(keys, state), {task_id: 2e15 if state == "pending" else PAST})
    text_id = task_id.decode("utf-8", "backslashreplace")
    if with_msg:
        raw.hset(keys.msg, task_id, dumps(message(text_id)))
    if with_info:
        raw.hset(keys.info, task_id, dumps(RECORD))
    broker.forward_due(Q)
    broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    work(broker)
    read_everything(broker, text_id)
    if with_msg and with_info and is_utf8(task_id):
        assert sets_of(raw, broker, task_id) == []  # it ran
    else:
        assert sets_of(raw, broker, task_id) == ["dead"]
        record = json.loads(raw.hget(keys.info, task_id))
        assert record["state"] == "dead" and readable(record["last_error"]), record


# -- admin and CLI --------------------------------------------------------------------------

ADMIN_ID = 't<1>&"é'  # escaping matters in ids too
PAGES = "/admin/django_bgtasks/task/"


@pytest.fixture
def staff(db):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client


def admin_pages(task_id: str, state: str) -> list[str]:
    """Every page that lists or shows the task: lists (one queue, all), search, detail."""
    lists = [f"{PAGES}{s}/?queue={Q}" for s in STATES]
    return [PAGES, *lists, f"{PAGES}{state}/", f"{PAGES}{state}/?name=job",
            f"{PAGES}{state}/?{urlencode({'id': task_id})}", f"{PAGES}dead/?name=%3C",
            f"{PAGES}{quote(task_id)}/change/?queue={Q}"]


@settings(FAST, max_examples=20)
@given(state=st.sampled_from(STATES), case=CORRUPTION)
@example(state="dead", case=("info", b'{"state": "dead", "attempts": 1e999, "max_retries": '
                                     b'NaN, "priority": [1], "enqueued_at": 1e300}'))
@example(state="pending", case=("msg", b"<script>alert(1)</script>"))
@example(state="completed", case=("result", b"[" * 5000))
@example(state="retry", case=("errors", dumps([{"at": math.inf, "error": "<script>"}])))
@example(state="dead", case=("msg", dumps({**message(ADMIN_ID), "args": [["\ud800"]]})))
@example(state="retry", case=("msg", dumps({**message(ADMIN_ID), "args": nested(900)})))
def test_admin_pages_and_cli_show_a_corrupt_task(broker, raw, staff, state, case):
    field, value = case
    reset(raw, broker)
    seed(broker, state, task_id=ADMIN_ID)
    overwrite(raw, broker, field, value, ADMIN_ID)
    for url in admin_pages(ADMIN_ID, state):
        response = staff.get(url, follow=True)
        assert response.status_code == 200, url
        page = response.content.decode()  # strict UTF-8: no raw bytes leaked
        assert "<script>alert" not in page and '"><b>' not in page, url
        if "/change/" in url or f"/{state}/?queue" in url:
            assert "t&lt;1&gt;&amp;&quot;é" in page, url  # the task is there, escaped
    for args in (["stats"], ["list", state, "-q", Q], ["list", state, "--json"],
                 ["list", state, "--name", "job"], ["show", ADMIN_ID],
                 ["show", ADMIN_ID, "--json"]):
        call_command("bgtasks", *args, stdout=io.StringIO())
    # and it can be acted on: the confirmation page shows it, deleting removes it
    selected = {"_selected_action": f"{Q}:{ADMIN_ID}", "next": PAGES}
    confirm = staff.post(f"{PAGES}action/", {"action": "delete", **selected})
    assert confirm.status_code == 200 and "t&lt;1&gt;&amp;&quot;é" in confirm.content.decode()
    staff.post(f"{PAGES}action/", {"action": "delete", "post": "yes", **selected})
    assert sets_of(raw, broker, ADMIN_ID) == (["active"] if state == "active" else [])


@pytest.mark.django_db
def test_admin_lists_odd_ids(broker, raw, staff):
    keys = broker.queue_keys(Q)
    for odd in (b"", b"\xff\xfe", b"L" * 50_000, b"<b>x</b>"):
        raw.zadd(keys.dead, {odd: 1_700_000_000_000})
    raw.sadd(broker.keys.queues, Q)
    for url in (PAGES, f"{PAGES}dead/?queue={Q}", f"{PAGES}dead/", f"{PAGES}dead/?name=x"):
        response = staff.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        if "dead/" in url and "name" not in url:
            assert "&lt;b&gt;x&lt;/b&gt;" in page and "\\xff\\xfe" in page, url
    call_command("bgtasks", "list", "dead", stdout=io.StringIO())


# -- a real worker --------------------------------------------------------------------------


def demo_message(task_id: str, **changes: object) -> dict:
    """A message of demo.tasks.record that records "never-<task_id>" if it ever runs."""
    base = {**message(task_id), "name": demo_tasks.record.name, "args": [f"never-{task_id}"]}
    return {**base, **changes}


def doomed_entries() -> dict[str | bytes, dict[str, bytes]]:
    """Task id -> what its hashes hold: one kind of damage each, none of them runnable."""
    m, rec = demo_message, dumps(RECORD)
    return {
        "m-binary": {"msg": b"\xff\x00garbage{", "info": rec},
        "m-list": {"msg": b"[1, 2]", "info": rec},
        "m-no-name": {"msg": dumps(m("m-no-name", name=None)), "info": rec},
        "m-args": {"msg": dumps(m("m-args", args="x")), "info": rec},
        "m-other-id": {"msg": dumps(m("elsewhere")), "info": rec},
        "m-deep": {"msg": b'{"args": ' + b"[" * 3000, "info": rec},
        "m-ttl": {"msg": dumps(m("m-ttl", result_ttl="x")), "info": rec},
        "m-timeout": {"msg": dumps(m("m-timeout", timeout=math.nan)), "info": rec},
        "m-enqueued": {"msg": dumps(m("m-enqueued", enqueued_at="x")), "info": rec},
        "m-missing": {"info": rec},
        "i-binary": {"msg": dumps(m("i-binary")), "info": b"\xff\xfe{"},
        "i-list": {"msg": dumps(m("i-list")), "info": b"[1, 2]"},
        "i-attempts": {"msg": dumps(m("i-attempts")), "info": dumps({**RECORD, "attempts": "x"})},
        "i-nan": {"msg": dumps(m("i-nan")), "info": dumps({**RECORD, "attempts": math.nan})},
        "i-priority": {"msg": dumps(m("i-priority")), "info": dumps({**RECORD, "priority": [1]})},
        "i-missing": {"msg": dumps(m("i-missing"))},
        "ghost": {},
        b"\xff\xfe-binary-id": {"msg": dumps(m("binary-id")), "info": rec},
        "L" * 20_000: {},
    }


def damaged_but_runnable() -> dict[str, dict[str, bytes]]:
    """Damage that does not stop a task from running (its history, a stray field)."""
    def entry(task_id: str, **fields: bytes) -> dict[str, bytes]:
        msg = dumps(demo_message(task_id, args=[f"ran-{task_id}"]))
        return {"msg": msg, "info": dumps(RECORD), **fields}

    return {"r-unique": entry("r-unique", info=dumps({**RECORD, "unique_key": True})),
            "r-extra": entry("r-extra", info=dumps({**RECORD, "extra": math.inf})),
            "r-errors": entry("r-errors", errors=b"\xff[{"),
            "r-result": entry("r-result", result=b"NaN")}


def test_worker_sends_every_corrupt_task_dead_and_runs_the_good_ones(
        start_worker, redis_server, broker):
    r = redis_server.client()
    keys = broker.queue_keys(Q)
    good = [f"{when}-{i}" for when in ("before", "after") for i in range(5)]
    for token in good[:5]:
        demo_tasks.record.enqueue(token)
    doomed, runnable = doomed_entries(), damaged_but_runnable()
    for n, (task_id, fields) in enumerate({**doomed, **runnable}.items()):
        r.zadd(keys.pending, {task_id: 2.01e15 + 5 + n / 4})  # priority 0, among the good
        for field, value in fields.items():
            r.hset(getattr(keys, field), task_id, value)
    for token in good[5:]:
        demo_tasks.record.enqueue(token)
    worker = start_worker("--processes", "1", "--threads", "2")

    expected = {*good, *(f"ran-{i}" for i in runnable)}
    wait_until(lambda: expected <= recording.ran(r), timeout=15, message="good tasks ran")
    wait_until(lambda: r.zcard(keys.dead) == len(doomed), timeout=15,
               message=f"{len(doomed)} dead tasks")
    assert not [t for t in recording.ran(r) if t.startswith("never-")]
    for task_id in doomed:
        record = json.loads(r.hget(keys.info, task_id))
        assert record["state"] == "dead" and readable(record["last_error"]), (task_id, record)
    assert broker.counts(Q) == {**dict.fromkeys(STATES, 0), "dead": len(doomed)}
    log = worker.wait_for_log("is corrupt and goes to the dead queue", count=len(doomed))
    assert "Traceback" not in log and worker.is_running()
