"""Flow control's invariants under random sequences of broker calls (hypothesis stateful).

A state machine drives the real broker (the Lua scripts on the test Redis) the way workers,
supervisors, pollers, janitors and the admin do, on two queues, with tasks carrying random
mixes of their own limits (per limit_key value too), named limits, fair keys, priorities
and run_after. After every step it reads the queues straight from Redis and checks that
limit counts match the runs holding them, that waiters and their index agree, that no task
is lost or charged an attempt for waiting; a drain step checks that no waiter is left
behind by a concurrency limit with room (docs/limits.md: "it starts as soon as it may").

BGTASKS_LIMITS_EXAMPLES=2000 runs a longer hunt than CI's default.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

from hypothesis import HealthCheck, event
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from demo.tasks import record
from django_bgtasks.broker import make_broker
from django_bgtasks.broker.keys import DELETABLE, STATES
from django_bgtasks.broker.types import Ack

QUEUES = ("qa", "qb")
BUSY = st.sampled_from(QUEUES[:1] * 3 + QUEUES[1:])  # mostly one queue: more contention
WORKERS = ("w1", "w2", "w3")
KEYS = ("k1", "k2", "k3")
# Slow rates: a token spent stays spent for the whole run, so time never decides a step.
NAMED = {"one": {"concurrency": 1}, "two": {"concurrency": 2}, "slow": {"rate": "2/h"},
         "both": {"concurrency": 2, "rate": "3/h"}}
NAMED_CONCURRENCY = {name: spec.get("concurrency", 0) for name, spec in NAMED.items()}
LEASE_MS = 60_000
SHORT_LEASE_MS = 1
DEAD_MAX, DEAD_AGE = 10**6, 10**12
EXAMPLES = int(os.environ.get("BGTASKS_LIMITS_EXAMPLES", "60"))


def limit_ids(info: dict) -> list[str]:
    return [spec[0] for spec in info.get("limits") or []]


class FlowControl(RuleBasedStateMachine):
    """What the broker was asked, and what each task's record must say because of it."""

    def __init__(self, raw) -> None:
        super().__init__()
        raw.flushall()
        self.raw = raw
        # its own broker: the janitor's cursors must start at 0 on the emptied Redis, or
        # hypothesis could not replay a failing sequence
        self.broker = make_broker()
        self.alive: dict[str, str] = {}  # id -> queue, for every task not deleted or forgotten
        self.attempts: dict[str, int] = {}  # id -> attempts its record must count
        self.held: list[tuple[str, str, str, int]] = []  # (queue, worker, id, attempt)
        self.lost: set[str] = set()  # recovered: its worker may still renew (regain)
        self.regained: set[str] = set()
        self.paused: set[str] = set()
        self.concurrency: dict[str, int] = dict(NAMED_CONCURRENCY)  # limit id -> c (0: none)
        self.seq = 0

    @initialize(own=st.integers(1, 3), own_rate=st.sampled_from([None, "2/h"]),
                per_key=st.lists(st.integers(1, 3), min_size=2, max_size=3))
    def limits_of_this_run(self, own, own_rate, per_key) -> None:
        """The values of the task's own limits: fixed per limit id, as a project's code is."""
        self.own, self.own_rate = own, own_rate
        self.per_key = dict(zip(KEYS, per_key, strict=False))
        self.concurrency[record.name] = own
        for key, c in self.per_key.items():
            self.concurrency[f"{record.name}[{key}]"] = c

    def teardown(self) -> None:
        self.broker.close()

    # -- what producers, workers and operators do ---------------------------------------

    @rule(queue=BUSY,
          count=st.integers(1, 4),  # several alike: they contend for the same limits
          own=st.sampled_from(["plain", *KEYS, None]),
          named=st.lists(st.sampled_from(["one", "two", "both", "slow"]), max_size=2,
                         unique=True),
          fair=st.sampled_from([None, "A", "B"]),
          priority=st.sampled_from([0, 0, 3, -2]),
          delay=st.sampled_from([None, None, None, 0.01, 3600.0]),
          max_retries=st.integers(0, 2))
    def enqueue(self, queue, count, own, named, fair, priority, delay, max_retries) -> None:
        options = {"queue_name": queue, "priority": priority, "max_retries": max_retries,
                   "limits": named}
        if own == "plain":
            options.update(concurrency_limit=self.own, rate_limit=self.own_rate)
        elif own is not None:
            own = own if own in self.per_key else KEYS[0]  # this run has 2 key values
            options.update(concurrency_limit=self.per_key[own],
                           limit_key=lambda token: token.split("|")[0])
        if fair is not None:
            options["fair_key"] = lambda token: token.split("|")[1]
        if delay is not None:
            options["run_after"] = delay
        task = record.using(**options)
        for _ in range(count):
            self.seq += 1
            task_id = task.enqueue(f"{own}|{fair}|{self.seq}").id
            self.alive[task_id] = queue
            self.attempts[task_id] = 0

    @rule(queue=BUSY, worker=st.sampled_from(WORKERS),
          n=st.integers(1, 4), short=st.booleans())
    def claim(self, queue, worker, n, short) -> None:
        self._claim(queue, worker, n, SHORT_LEASE_MS if short else LEASE_MS)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), n=st.integers(0, 2),
          outcome=st.sampled_from(["done", "kept", "retry", "retry-later", "dead",
                                   "requeue"]))
    def ack(self, data, n, outcome) -> None:
        queue, worker, task_id, attempt = data.draw(st.sampled_from(self.held))
        ack = {"done": Ack(task_id, attempt, "done"),
               "kept": Ack(task_id, attempt, "done", result_ttl_ms=10**9),
               "retry": Ack(task_id, attempt, "retry", delay_ms=5, error="E: soon"),
               "retry-later": Ack(task_id, attempt, "retry", delay_ms=10**8, error="E"),
               "dead": Ack(task_id, attempt, "dead", error="E: boom"),
               "requeue": Ack(task_id, attempt, "requeue")}[outcome]
        self.held.remove((queue, worker, task_id, attempt))
        result = self.broker.claim(queue, worker, [ack], n, LEASE_MS, DEAD_MAX, DEAD_AGE)
        if task_id not in result.ignored:  # the ack comes first, then the claim
            self.lost.discard(task_id)  # a late ack of a recovered attempt still counts
            self.regained.discard(task_id)
            if outcome == "done":
                self._forget(task_id)
            elif outcome == "requeue":
                self.attempts[task_id] -= 1
        self._took(queue, worker, result)

    @precondition(lambda self: self.held)
    @rule(queue=BUSY, worker=st.sampled_from(WORKERS))
    def renew(self, queue, worker) -> None:
        """A live worker's heartbeat: it takes back a recovered run nobody restarted."""
        mine = [(i, a) for q, w, i, a in self.held if (q, w) == (queue, worker)]
        if not mine:
            return
        gone = set(self.broker.renew(queue, [(i, a, "") for i, a in mine], LEASE_MS).lost)
        for task_id, attempt in mine:
            if task_id in gone:
                self.held.remove((queue, worker, task_id, attempt))
            elif task_id in self.lost:
                self.lost.discard(task_id)
                self.regained.add(task_id)

    @rule(queue=BUSY, state=st.sampled_from(DELETABLE + ("pending!", "waiting") * 2),
          data=st.data())
    def delete(self, queue, state, data) -> None:
        """The admin deletes a task of one state (picked by state: a woken task, pending
        until it is claimed, is the interesting one)."""
        keys = self._keys(queue)
        ids = [m.decode() for m in self.raw.zrange(getattr(keys, state.strip("!")), 0, -1)]
        if state == "pending!":  # the ones a run's end just woke
            ids = [i for i in ids if b'"woken"' in (self.raw.hget(keys.info, i) or b"")]
        if not ids:
            return
        task_id = data.draw(st.sampled_from(ids))  # in Redis' order: ids are random
        deleted, refused = self.broker.delete(queue, [task_id])
        assert (deleted, refused) == ([task_id], [])
        self._forget(task_id)

    @rule(queue=BUSY, worker=st.sampled_from(WORKERS))
    def worker_process_dies(self, queue, worker) -> None:
        back, dead, _ = self.broker.release_worker(queue, worker, "WorkerLost: killed",
                                                   DEAD_MAX, DEAD_AGE)
        self.lost.update(back, dead)
        # a dead process never reports again
        self.held = [h for h in self.held if (h[0], h[1]) != (queue, worker)]

    @rule(queue=BUSY)
    def recover_expired(self, queue) -> None:
        time.sleep(0.003)  # short leases (1 ms) are over
        result = self.broker.recover_expired(queue, DEAD_MAX, DEAD_AGE, lease_ms=0)
        self.lost.update(result.moved, result.killed)

    @rule(queue=BUSY)
    def forward_due(self, queue) -> None:
        time.sleep(0.01)  # short run_after and retry delays are due
        self.broker.forward_due(queue)

    @rule(queue=BUSY)
    def janitor(self, queue) -> None:
        self.broker.clean(queue, DEAD_MAX, DEAD_AGE)

    @rule(queue=BUSY)
    def pause(self, queue) -> None:
        self.broker.pause(queue)
        self.paused.add(queue)

    @rule(queue=BUSY)
    def resume(self, queue) -> None:
        self.broker.resume(queue)
        self.paused.discard(queue)

    @rule(queue=BUSY)
    def drain(self, queue) -> None:
        """Claim everything claimable; then no waiter may be left behind by concurrency
        limits that all have room (nothing else would ever wake it but the janitor)."""
        if queue in self.paused:
            return
        for _ in range(20):
            if not self._claim(queue, "drainer", 50, LEASE_MS):
                break
        state = self._read(queue)
        for task_id in state.sets["waiting"]:
            specs = state.infos[task_id].get("limits") or []
            if specs and all(c > 0 and rn == 0 for _lid, c, rn, _rp in specs):
                full = [lid for lid, c, _rn, _rp in specs if state.run(lid) >= c]
                assert full, (f"{queue}: {task_id} waits ({state.infos[task_id]}) while all "
                              f"its limits have room: {state.limits}")

    # -- helpers --------------------------------------------------------------------------

    def _keys(self, queue):
        return self.broker.queue_keys(queue)

    def _claim(self, queue, worker, n, lease_ms):
        result = self.broker.claim(queue, worker, [], n, lease_ms, DEAD_MAX, DEAD_AGE)
        return self._took(queue, worker, result)

    def _took(self, queue, worker, result):
        for claimed in result.claimed:
            self.attempts[claimed.id] += 1
            assert claimed.attempt == self.attempts[claimed.id]
            self.held.append((queue, worker, claimed.id, claimed.attempt))
            self.lost.discard(claimed.id)  # a new attempt: the old one cannot come back
            self.regained.discard(claimed.id)
        assert not result.killed
        return result.claimed

    def _forget(self, task_id) -> None:
        del self.alive[task_id]
        self.lost.discard(task_id)
        self.regained.discard(task_id)

    def _read(self, queue) -> QueueState:
        return QueueState(self.raw, self._keys(queue))

    # -- invariants, read straight from Redis ---------------------------------------------

    @invariant()
    def every_queue_is_consistent(self) -> None:
        for queue in QUEUES:
            self._check(queue, self._read(queue))

    def _check(self, queue: str, state: QueueState) -> None:
        alive = {i for i, q in self.alive.items() if q == queue}
        # no task lost, none left over: each in exactly one state set, as its record says
        where = Counter(i for ids in state.sets.values() for i in ids)
        assert set(where) == alive, (set(where) ^ alive, state.sets)
        assert all(count == 1 for count in where.values()), where
        assert set(state.infos) == alive
        for name, ids in state.sets.items():
            for task_id in ids:
                info = state.infos[task_id]
                assert info["state"] == name, (task_id, name, info)
                # attempts count claims, never waits (a task only ever parked has 0)
                assert info["attempts"] == self.attempts[task_id], (task_id, info)
                assert not info.get("held") or name == "active", (task_id, info)
                assert ("wait_member" in info) == (name == "waiting"), (task_id, info)
        # each limit's count is the runs holding it, and within its concurrency (a
        # regained run takes its slot back over the limit: it never stopped)
        holding: Counter[str] = Counter()
        over: Counter[str] = Counter()
        for task_id in state.sets["active"]:
            info = state.infos[task_id]
            if info.get("held"):
                holding.update(limit_ids(info))
                if task_id in self.regained:
                    over.update(limit_ids(info))
        for lid in set(holding) | set(state.limits):
            assert state.run(lid) == holding[lid], (queue, lid, state.limits, holding)
            c = self.concurrency.get(lid, 0)
            assert not c or holding[lid] <= c + over[lid], (queue, lid, holding, over)
        # the waiters and their index agree, one member each
        members = {state.infos[i].get("wait_member"): i for i in state.sets["waiting"]}
        assert set(state.lwait) == set(members), (state.lwait, members)
        for member, task_id in members.items():
            lid, _score, member_id = member.split("\0")
            assert member_id == task_id and lid in limit_ids(state.infos[task_id]), member
        event(f"{queue}: waiting {min(len(state.sets['waiting']), 3)}, "
              f"woken {sum(1 for i in state.sets['pending'] if 'woken' in state.infos[i])}")
        # no waiter stranded: a concurrency limit with room and waiters has, in pending,
        # the woken tasks that will take that room (or pass their wake-up on)
        pending_with: Counter[str] = Counter()
        for task_id in state.sets["pending"]:
            pending_with.update(limit_ids(state.infos[task_id]))
        waiters = Counter(member.split("\0")[0] for member in state.lwait)
        for lid, count in waiters.items():
            c = self.concurrency.get(lid, 0)
            if c and not state.limits.get(lid, {}).get("rn"):
                room = c - state.run(lid)
                assert pending_with[lid] >= min(room, count), (
                    f"{queue}: {count} task(s) wait for {lid} with {room} free slot(s) and "
                    f"{pending_with[lid]} woken: {state.limits.get(lid)}")


class QueueState:
    """One queue's sets, records, limits and waiter index, as Redis holds them now."""

    def __init__(self, raw, keys) -> None:
        self.sets = {name: [m.decode() for m in raw.zrange(getattr(keys, name), 0, -1)]
                     for name in STATES}
        self.infos = {k.decode(): json.loads(v) for k, v in raw.hgetall(keys.info).items()}
        self.limits = {k.decode(): json.loads(v) for k, v in raw.hgetall(keys.limits).items()}
        self.lwait = [m.decode() for m in raw.zrange(keys.lwait, 0, -1)]
        assert set(self.infos) == {k.decode() for k in raw.hkeys(keys.msg)}

    def run(self, lid: str) -> int:
        return self.limits.get(lid, {}).get("run", 0)


def test_flow_control_invariants_hold_under_random_operations(raw, settings):
    settings.BGTASKS = {**settings.BGTASKS, "LIMITS": NAMED}
    run_state_machine_as_test(
        lambda: FlowControl(raw),
        settings=hypothesis_settings(max_examples=EXAMPLES, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck)))


# Found by the state machine: a limit whose last waiter was woken, then deleted, stayed in
# the limits hash with nothing running (release_limits decided "idle" before waking).
def test_a_limit_left_with_nothing_running_and_no_waiter_is_forgotten(settings):
    settings.BGTASKS = {**settings.BGTASKS, "LIMITS": NAMED}
    broker, task = make_broker(), record.using(queue_name="qa", limits=["one"])
    first, second = task.enqueue("a").id, task.enqueue("b").id
    running = broker.claim("qa", "w1", [], 2, LEASE_MS, DEAD_MAX, DEAD_AGE).claimed
    assert [c.id for c in running] == [first]  # the second waits
    broker.claim("qa", "w1", [Ack(first, 1, "done")], 0, LEASE_MS, DEAD_MAX, DEAD_AGE)
    broker.delete("qa", [second])  # woken by that ack, deleted before its claim

    assert broker.limits("qa") == ([], 0)
