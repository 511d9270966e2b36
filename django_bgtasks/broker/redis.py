"""RedisBroker: one method per state transition (each one Lua script, broker/lua) and the
plain reads and writes around them.

Two packages talk to Redis: this one (this module: the transitions, the hot path's
hand-packed calls, failover following; bulk.py: bulk jobs; queue_waiter.py and
schedule_waiter.py: blocking waits) and the read side's ops/inspect.py (lists, counts,
workers; its own pipelines, over this broker's client and keys). The requests and
results are in types.py, the "is this error transient" policy in errors.py, argument
and reply packing in packing.py. redis-py may resend a script after a connection error,
so each script is safe to apply twice. Connection failures surface as
BrokerUnavailable; callers decide whether to retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from ..exceptions import BgTasksError, BrokerUnavailable
from .connection import Client, translated
from .core import BrokerCore
from .errors import TRANSIENT_ERRORS, is_transient, ride_out
from .journal import (
    REPLAY_FAILED,
    REPLAYED,
    UNLISTED,
    Replayer,
    replay_batches,
)
from .keys import STATES
from .packing import (
    TASK_HASHES,
    as_text,
    encode_arg,
    enqueue_batches,
    enqueue_fields,
    enqueue_outcomes,
    json_object,
    remember,
    socket_timeout,
    split_unlisted,
    task_record,
    whole_number,
)
from .queue_waiter import QueueWaiter
from .schedule_waiter import ScheduleWaiter
from .scripts import register_scripts
from .sentinel_watch import is_sentinel_client, master_address, watch_master_switches
from .types import (
    Ack,
    Awaited,
    CancelResult,
    ClaimedTask,
    ClaimResult,
    Cleaned,
    DueResult,
    EnqueueOutcome,
    EnqueueRequest,
    FireOutcome,
    LimitStatus,
    PeriodicTick,
    Renewal,
    Retention,
    TaskRecord,
)
from .waiting import READ_COUNT, Call, waiting_steps

logger = logging.getLogger("django_bgtasks")

WAKER_TTL_MS = 10_000  # a wake-up token nobody took (its process had already left)


class RedisBroker(BrokerCore):
    """Named operations over one Redis client, for one key prefix."""

    def __init__(self, connection: Client, prefix: str, wait_replicas: int = 0,
                 wait_timeout: float = 0.5, watch_master: bool = True,
                 journal_seconds: float = 0.0) -> None:
        super().__init__(connection, prefix, wait_replicas, wait_timeout)
        self._queue_waiter: QueueWaiter | None = None
        self._node_pools: dict[str, Any] = {}  # cluster: queue -> its master's pool
        # Behind Sentinel: what was enqueued lately, written again to a new master.
        self._journal = self._journal_for(journal_seconds, is_sentinel_client(self.client))
        self._replayer = Replayer(self._write_again) if self._journal is not None else None
        self._master_watch = (watch_master_switches(self.client, self._master_switched)
                              if watch_master else None)
        self._scripts = register_scripts(self.client)
        self._packed_heads: dict[tuple[str, str, int], bytes] = {}
        self._janitor_cursors: dict[str, tuple[str, str]] = {}  # queue -> HSCAN cursors
        # A blocking wait must end well before the socket times out, or every idle wait
        # would be reported as "cannot reach Redis" and reconnect.
        timeout = socket_timeout(self.client)
        self._blocking_slice = timeout / 2 if timeout else float("inf")

    # -- plumbing ---------------------------------------------------------------------

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise self._translated(exc) from exc

    def _translated(self, exc: Exception) -> BgTasksError:
        return translated(self.target, exc)

    def _run(self, name: str, queue: str, args: Sequence[Any], extra_keys: Sequence[str] = ()):
        keys = self.queue_keys(queue)
        with self.translate_errors():
            return self._scripts[name](keys=[*keys.all, *extra_keys], args=list(args))

    def _run_packed(self, name: str, queue: str, args: Sequence[Any],
                    extra_keys: Sequence[str] = ()):
        """The hot path: EVALSHA written straight to a pooled connection, its constant head
        (sha, the queue's keys) packed once. redis-py's generic command path cost about
        three times the socket time per call (measured); anything unusual (NOSCRIPT after
        a restart, a dropped connection) falls back to the ordinary, retrying path, which
        is safe because every script may be applied twice."""
        head = self._packed_heads.get((name, queue, len(args)))
        if head is None:
            keys = [*self.queue_keys(queue).all, *extra_keys]
            parts = [b"EVALSHA", self._scripts[name].sha.encode(), b"%d" % len(keys),
                     *(k.encode() for k in keys)]
            head = b"*%d\r\n" % (len(parts) + len(args)) + b"".join(
                b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            remember(self._packed_heads, (name, queue, len(args)), head)
        body = b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in map(encode_arg, args))
        try:
            pool = self._pool_for(queue)
            conn = pool.get_connection()
        except (redis.exceptions.RedisClusterException, *TRANSIENT_ERRORS):
            self._node_pools.pop(queue, None)
            return self._run(name, queue, args, extra_keys)
        try:
            conn.send_packed_command([head + body])
            return conn.read_response()
        except redis.TimeoutError as exc:
            conn.disconnect()
            if self._cluster:
                # A hung master: the cluster client finds out whether its replica took
                # over (and relearns the slots) instead of this cached node.
                self._node_pools.pop(queue, None)
                return self._run(name, queue, args, extra_keys)
            # One Redis took the whole socket timeout: asking again would double the wait
            # of a caller who is owed a prompt error.
            raise self._translated(exc) from exc
        except (redis.exceptions.NoScriptError, *TRANSIENT_ERRORS):
            conn.disconnect()
            self._node_pools.pop(queue, None)
        except (redis.exceptions.MovedError, redis.exceptions.AskError):
            # The slot moved (a failover, a resharding): the cluster client follows it
            # and learns the new layout; this queue's node is looked up again.
            self._node_pools.pop(queue, None)
        except redis.ResponseError as exc:  # a refusal (out of memory...) is the answer
            if not is_transient(exc):
                raise self._translated(exc) from exc
            self._node_pools.pop(queue, None)
        finally:
            pool.release(conn)
        return self._run(name, queue, args, extra_keys)

    def _pool_for(self, queue: str) -> Any:
        """The connection pool of the server holding ``queue``'s keys: on a cluster, that
        of the master serving the queue's slot (as the cluster client last saw it)."""
        if not self._cluster:
            return self.client.connection_pool
        pool = self._node_pools.get(queue)
        if pool is None:
            node = self.client.get_node_from_key(self.queue_keys(queue).pending)
            pool = remember(self._node_pools, queue, node.redis_connection.connection_pool)
        return pool

    def ping(self) -> None:
        """Raise BrokerUnavailable unless Redis answers (on a cluster, every master)."""
        with self.translate_errors():
            if self._cluster:  # a replica down loses no task: it must not fail start-up
                self.client.ping(target_nodes=self.client.PRIMARIES)
            else:
                self.client.ping()

    def close(self, close_client: bool = True) -> None:
        """Stop this broker's threads; close the client unless it is shared (a
        django-redis cache's client belongs to the cache framework)."""
        if self._master_watch is not None:
            self._master_watch.stop()
        if self._replayer is not None:  # a replay under way needs the client
            self._replayer.wait(self.retry_for + 5)
        if self._queue_waiter is not None:
            self._queue_waiter.close()
        if close_client:
            self.client.close()

    def _run_confirmed(self, name: str, queue: str, args: Sequence[Any],
                       extra_keys: Sequence[str] = ()):
        """Run a script, then WAIT for WAIT_REPLICAS replicas to hold what it wrote, on the
        same connection (WAIT counts that connection's writes): one pipeline to the node
        that serves ``queue``. Too few replicas in time is "not now" (BrokerUnavailable):
        the caller retries, and the script applied again finds its task."""
        return self.run_script_confirmed(name, [*self.queue_keys(queue).all, *extra_keys],
                                         args, "the task")

    def run_script_confirmed(self, name: str, keys: Sequence[str], args: Sequence[Any],
                             what: str):
        """Run a script whose keys share ``keys[0]``'s slot, then WAIT for WAIT_REPLICAS
        replicas to hold what it wrote, on the same connection (WAIT counts that
        connection's writes): one pipeline to the node serving the slot. Too few replicas
        in time is "not now" (BrokerUnavailable); the caller retries, which is safe as
        every script may be applied twice."""
        node = (self.client.get_node_from_key(keys[0]).redis_connection
                if self._cluster else self.client)
        with self.translate_errors():
            pipe = node.pipeline(transaction=False)
            self._scripts[name](keys=list(keys), args=list(args), client=pipe)
            pipe.wait(self._wait_replicas, self._wait_timeout_ms)
            reply, confirmed = pipe.execute()
        if confirmed < self._wait_replicas:
            raise BrokerUnavailable(
                f"Redis at {self.target} wrote {what}, but {confirmed} of "
                f"{self._wait_replicas} replicas confirmed it within "
                f"{self._wait_timeout_ms} ms (WAIT_REPLICAS)")
        return reply

    def _write_tasks(self, queue: str, args: Sequence[Any], journal: bool = True):
        """One enqueue script call, confirmed by replicas if so configured, riding out a
        failover for up to retry_for seconds (safe: a script applied twice finds its
        task), then noted in the journal (behind Sentinel)."""
        run = self._run_confirmed if self._wait_replicas else self._run_packed
        notes = self._journal if journal else None
        switches = notes.switches if notes is not None else 0

        listed = self.queue_keys(queue).listed
        unlisted, reply = split_unlisted(
            ride_out(lambda: run("enqueue", queue, args, [listed]), self.retry_for))
        if unlisted:
            try:
                self.register_queue(queue)
            except BgTasksError as exc:  # the tasks are written; the next enqueue lists it
                logger.warning(UNLISTED, queue, exc)
        if notes is not None:
            again = notes.record(queue, args, self._master_of(queue), switches)
            if again and self._replayer is not None:
                self._replayer.submit(again, "an acknowledgement came from a new master")
        return reply

    def _master_of(self, queue: str) -> Any:
        """The address of the master that holds ``queue`` as this client last found it."""
        if self._cluster:
            node = self.client.get_node_from_key(self.queue_keys(queue).pending)
            return (node.host, node.port)
        return master_address(self.client)

    def _master_switched(self, master: tuple[str, int]) -> None:
        """Sentinel announced a new master (the watcher's thread)."""
        if self._journal is not None:
            again = self._journal.switched(master)
            if again and self._replayer is not None:
                self._replayer.submit(again, f"Sentinel switched to {master[0]}:{master[1]}")

    def _write_again(self, calls: Sequence[tuple[str, Sequence[Any]]], why: str) -> None:
        """Write journaled enqueue calls to the current master, in batches per queue: what
        it has is reported as existing, what the old master dropped is written again."""
        written = 0
        for queue, args, count in replay_batches(calls, self.keys.wake_channel):
            try:
                self._write_tasks(queue, args, journal=False)
            except BgTasksError as exc:
                logger.error(REPLAY_FAILED, count, queue, why, exc)
                continue
            written += count
        logger.warning(REPLAYED, self._journal.window if self._journal else 0, why, written)

    def eviction_policy(self) -> str:
        """Redis' maxmemory-policy, read from INFO (allowed where CONFIG GET is not)."""
        with self.translate_errors():
            if not self._cluster:
                return str(self.client.info("memory").get("maxmemory_policy", "noeviction"))
            # Every master holds queues: the riskiest of their policies counts.
            per_node = self.client.info("memory", target_nodes=self.client.PRIMARIES)
        policies = [str(info.get("maxmemory_policy", "noeviction"))
                    for info in per_node.values() if isinstance(info, dict)]
        riskiest = sorted(policies, key=lambda p: (not p.startswith("allkeys"),
                                                   p == "noeviction"))
        return riskiest[0] if riskiest else "noeviction"

    def server_time_ms(self) -> int:
        """Redis' clock, in ms: what the scripts decide with, whatever this host's says."""
        with self.translate_errors():
            seconds, micros = self.client.time()
        return seconds * 1000 + micros // 1000

    # -- queues -----------------------------------------------------------------------

    def register_queue(self, queue: str) -> None:
        """Record a queue name in the global set, then its "listed" marker (enqueue.lua
        reports a missing marker: Redis lost its data, and the queue is listed again)."""
        with self.translate_errors():
            self.client.sadd(self.keys.queues, queue)
            self.client.set(self.queue_keys(queue).listed, "1")

    def known_queues(self) -> list[str]:
        with self.translate_errors():
            return sorted(as_text(q) for q in self.client.smembers(self.keys.queues))

    def pause(self, queue: str) -> None:
        with self.translate_errors():
            self.client.set(self.queue_keys(queue).paused, "1")

    def resume(self, queue: str) -> None:
        with self.translate_errors():
            self.client.delete(self.queue_keys(queue).paused)

    # -- transitions ------------------------------------------------------------------

    def enqueue(self, req: EnqueueRequest) -> EnqueueOutcome:
        """Write a new task (pending, or scheduled when due later)."""
        reply = self._write_tasks(req.queue, [self.keys.wake_channel, *enqueue_fields(req)])
        return enqueue_outcomes(reply)[0]

    def enqueue_many(self, reqs: Sequence[EnqueueRequest]) -> list[EnqueueOutcome]:
        """Write many tasks: one script call per queue and batch of ENQUEUE_BATCH."""
        outcomes: dict[int, EnqueueOutcome] = {}
        for queue, chunk, args in enqueue_batches(reqs, self.keys.wake_channel):
            replies = enqueue_outcomes(self._write_tasks(queue, args))
            outcomes.update(zip(chunk, replies, strict=True))
        return [outcomes[index] for index in range(len(reqs))]

    def claim(self, queue: str, worker_id: str, acks: Sequence[Ack], limit: int,
              lease_ms: int, dead_max_tasks: int, dead_max_age_ms: int,
              claim_seq: int | None = None, known_seq: int = 0) -> ClaimResult:
        """Acknowledge finished attempts and claim up to ``limit`` tasks, in one call.

        A worker numbers its calls per queue (``claim_seq``) and says which call's reply it
        last received (``known_seq``): Redis then puts back, uncounted, what a claim whose
        reply was lost took. Without ``claim_seq`` no claim is remembered."""
        args: list[Any] = [worker_id, lease_ms, limit, dead_max_tasks, dead_max_age_ms,
                           self.keys.wake_channel, "" if claim_seq is None else claim_seq,
                           known_seq, len(acks)]
        for ack in acks:
            args.extend(ack.fields())
        day = time.strftime("%Y-%m-%d", time.gmtime())
        keys = self.queue_keys(queue)
        ignored, flat, killed, expired, forward = self._run(
            "claim", queue, args,
            [keys.stats("processed", day), keys.stats("failed", day), keys.claims])
        claimed = [ClaimedTask(as_text(flat[i]), flat[i + 1], int(flat[i + 2]))
                   for i in range(0, len(flat), 3)]
        return ClaimResult([as_text(i) for i in ignored], claimed,
                           [(as_text(killed[i]), as_text(killed[i + 1]))
                            for i in range(0, len(killed), 2)],
                           [as_text(i) for i in expired] if expired else [],
                           [(as_text(forward[i]), forward[i + 1])
                            for i in range(0, len(forward), 2)] if forward else [])

    def renew(self, queue: str, runs: Sequence[tuple[str, int, str]],
              lease_ms: int) -> Renewal:
        """A worker's control call for its runs (id, attempt, progress JSON or ""): renew
        their leases (``lease_ms`` 0: not in this call), write their progress, and learn
        which of them someone asked to cancel."""
        args: list[Any] = [lease_ms]
        for run in runs:
            args.extend(run)
        lost, cancel = self._run("extend", queue, args)
        return Renewal([as_text(i) for i in lost], [as_text(i) for i in cancel])

    def forward_due(self, queue: str, limit: int = 100) -> DueResult:
        """Move due scheduled and retry tasks to pending; those past their expiry end
        'expired' instead (``DueResult.expired``)."""
        moved, more, next_due, now, expired = self._run("forward", queue, [limit])
        return DueResult(int(moved), [], bool(more), next_due, int(now),
                         [as_text(i) for i in expired])

    def recover_expired(self, queue: str, dead_max_tasks: int, dead_max_age_ms: int,
                        limit: int = 100, lease_ms: int = 0) -> DueResult:
        """Return tasks whose lease expired to pending (or dead when out of attempts).
        When nobody swept for half of ``lease_ms`` (Redis stalled or out of reach), wait
        ``lease_ms`` first, for live workers to renew (0: no such grace)."""
        keys = self.queue_keys(queue)
        recovered, killed, next_expiry, now, cancelled = self._run(
            "recover", queue, [limit, dead_max_tasks, dead_max_age_ms, lease_ms],
            [keys.claims, keys.swept])
        return DueResult([as_text(i) for i in recovered], [as_text(i) for i in killed],
                         len(recovered) + len(killed) + len(cancelled) >= limit,
                         next_expiry, int(now),
                         cancelled=[as_text(i) for i in cancelled])

    def release_worker(self, queue: str, worker_id: str, error: str, dead_max_tasks: int,
                       dead_max_age_ms: int) -> tuple[list[str], list[str], list[str]]:
        """A worker process is known dead: return its active tasks now, as recover_expired
        would once their leases expire. Returns (ids back to pending, ids now dead, ids
        now cancelled: their cancel was requested)."""
        back, dead, cancelled = self._run("release", queue,
                                          [worker_id, error, dead_max_tasks, dead_max_age_ms],
                                          [self.queue_keys(queue).claims])
        return ([as_text(i) for i in back], [as_text(i) for i in dead],
                [as_text(i) for i in cancelled])

    # -- periodic tasks ---------------------------------------------------------------

    def fire_periodic(self, queue: str, name: str, spec_id: str, mark_ms: int, policy: str,
                      max_lateness_ms: int | None, overlap: str, priority: int,
                      max_retries: int, ticks: Sequence[PeriodicTick],
                      omitted: str = "0", limits: str = "", fair_key: str = "",
                      ) -> FireOutcome:
        """Offer ``ticks`` (ascending) of entry ``name``; Redis admits each due tick newer
        than the entry's mark exactly once, whichever host offers it (cron_fire.lua).
        ``omitted`` counts the older due ticks not offered ("50", or "10000+")."""
        keys = self.queue_keys(queue)
        args: list[Any] = [name, spec_id, mark_ms, policy,
                           "" if max_lateness_ms is None else max_lateness_ms, overlap,
                           priority, max_retries, omitted, limits, fair_key]
        for tick in ticks:
            args += [tick.tick_ms, tick.id, tick.message]
        outcome, fired, last = self._run("cron_fire", queue, args,
                                         [keys.cron, keys.cron_history(name)])
        return FireOutcome(as_text(outcome), [as_text(i) for i in fired], int(last))

    def enable_periodic(self, queue: str, name: str, enabled: bool, mark_ms: int) -> bool:
        """Switch entry ``name`` on or off; True when that changed something."""
        keys = self.queue_keys(queue)
        return bool(self._run("cron_enable", queue, [name, "1" if enabled else "0", mark_ms],
                              [keys.cron, keys.cron_history(name)]))

    def run_periodic_now(self, queue: str, name: str, task_id: str, message: str,
                         priority: int, max_retries: int, limits: str = "",
                         fair_key: str = "") -> str:
        """Enqueue entry ``name``'s task now, outside its schedule, and note it in the
        entry's history (cron_run.lua). Returns 'ok', or 'exists' when ``task_id`` holds
        another message (the same request, sent again, returns 'ok')."""
        keys = self.queue_keys(queue)
        status, _state = self._run("cron_run", queue,
                                   [name, task_id, message, priority, max_retries, limits,
                                    fair_key],
                                   [keys.cron, keys.cron_history(name),
                                    keys.cron_request(task_id)])
        return as_text(status)

    def periodic_states(self, queue: str) -> dict[str, dict[str, Any]]:
        """Every entry's stored state in ``queue`` (last tick mark, enabled, last task)."""
        with self.translate_errors():
            raw = self.client.hgetall(self.queue_keys(queue).cron)
        return {as_text(name): json_object(value) for name, value in raw.items()}

    def periodic_history(self, queue: str, name: str) -> list[dict[str, Any]]:
        """The entry's last 100 tick outcomes, newest first."""
        with self.translate_errors():
            raw = self.client.lrange(self.queue_keys(queue).cron_history(name), 0, -1)
        return [json_object(item) for item in raw]

    def clean(self, queue: str, dead_max_tasks: int, dead_max_age_ms: int,
              limit: int = 200, cancelled: Retention | None = None,
              expired: Retention | None = None) -> Cleaned:
        """Trim dead tasks, expired results and expired unique locks, and the cancelled
        and expired tasks beyond their retention (None: not trimmed), in one bounded batch;
        go over the next page of the queue's limits and fair keys (janitor.lua)."""
        limits_cursor, fair_cursor = self._janitor_cursors.get(queue, ("0", "0"))
        retention: list[Any] = []
        for kept in (cancelled, expired):
            retention += [kept.max_tasks, kept.max_age_ms] if kept else ["", ""]
        (dead, completed, locks, more, limits_cursor, woken, fair_cursor, n_cancelled,
         n_expired) = self._run("janitor", queue, [dead_max_tasks, dead_max_age_ms, limit,
                                                   limits_cursor, fair_cursor, *retention])
        self._janitor_cursors[queue] = (as_text(limits_cursor), as_text(fair_cursor))
        if int(woken):
            # Usually one more than needed (a woken task not yet claimed is not counted):
            # harmless, it waits again; hence not a warning.
            logger.debug("queue %s: the janitor woke %d task(s) waiting for a limit with "
                         "room", queue, int(woken))
        return Cleaned(int(dead), int(completed), int(locks), bool(more), int(n_cancelled),
                       int(n_expired))

    def requeue(self, queue: str, ids: Sequence[str]) -> list[str]:
        """Run now: scheduled, retry or dead tasks to pending. Returns the ids moved."""
        return [as_text(i) for i in self._run("requeue", queue, list(ids))] if ids else []

    def delete(self, queue: str, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete tasks not running. Returns (deleted ids, refused active ids)."""
        if not ids:
            return [], []
        deleted, refused = self._run("delete", queue, list(ids))
        return [as_text(i) for i in deleted], [as_text(i) for i in refused]

    def cancel(self, queue: str, ids: Sequence[str], by: str = "",
               confirmed: bool = False) -> CancelResult:
        """Cancel these tasks of ``queue`` in one call (cancel.lua): queued ones end
        cancelled, running ones are asked to stop; ``by`` says who asked. ``confirmed``:
        with WAIT_REPLICAS, return only once replicas hold it (a workflow's cancels)."""
        if not ids:
            return CancelResult()
        run = self._run_confirmed if confirmed and self._wait_replicas else self._run
        cancelled, requested, ended, missing = run("cancel", queue, [by, *ids])
        return CancelResult([as_text(i) for i in cancelled], [as_text(i) for i in requested],
                            {as_text(ended[i]): as_text(ended[i + 1])
                             for i in range(0, len(ended), 2)},
                            [as_text(i) for i in missing])

    # -- waiting ----------------------------------------------------------------------

    def wait_for_work(self, queues: Sequence[str], timeout: float,
                      waker: str | None = None) -> str | None:
        """Block until a task is announced on one of ``queues`` (or timeout): no polling.
        ``wake(queues, waker)`` from another thread ends the wait of that ``waker``."""
        names = [self.queue_keys(q).notify for q in queues]
        if self._cluster and len(names) > 1:
            # A cluster refuses BLPOP over keys in different slots: one blocking
            # connection per queue instead.
            if self._queue_waiter is None:
                self._queue_waiter = QueueWaiter(self.client, self.translate_errors,
                                                 self._blocking_slice)
            return self._queue_waiter.wait(dict(zip(queues, names, strict=True)), timeout)
        keys = [*names, self.queue_keys(queues[0]).waker(waker)] if waker else names
        with self.translate_errors():
            reply = self.client.blpop(keys, timeout=min(timeout, self._blocking_slice))
        if reply is None:
            return None
        key = as_text(reply[0])
        return next((q for q, name in zip(queues, names, strict=True) if name == key), None)

    def wake(self, queues: Sequence[str], waker: str) -> None:
        """End the current (or next) wait_for_work of ``waker`` at once (a stopping worker
        process must not sit out its idle wait)."""
        if self._queue_waiter is not None:
            self._queue_waiter.interrupt()
            return
        key = self.queue_keys(queues[0]).waker(waker)
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(key, "1")
            pipe.pexpire(key, WAKER_TTL_MS)  # gone soon if nobody waits any more
            pipe.execute()

    def wake_pollers(self) -> None:
        """Wake every waiting poller (they re-read due times; a stopping one exits)."""
        with self.translate_errors():
            self.client.publish(self.keys.wake_channel, "0")

    def schedule_waiter(self) -> ScheduleWaiter:
        """A subscription telling pollers that an earlier due time appeared."""
        return ScheduleWaiter(self)

    def wait_for_end(self, task_id: str, timeout: float) -> Awaited:
        """Wait up to ``timeout`` seconds for ``task_id`` to end (waiting.py): woken by its
        end's stream entry, not by polling."""
        steps = waiting_steps(task_id, timeout, self._blocking_slice)
        try:
            call = next(steps)
            while True:
                try:
                    reply = self._wait_call(call)
                except BaseException as exc:  # the steps take their registration back
                    call = steps.throw(exc)
                else:
                    call = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _wait_call(self, call: Call) -> Any:
        if call.kind == "queues":
            return self.known_queues()
        if call.kind == "read":
            return self.read_task(call.args[0], [call.args[1]])
        queue = call.args[0]
        if call.kind == "script":
            return self._run(call.args[1], queue, call.args[2])
        with self.translate_errors():
            return self.client.xread({self.queue_keys(queue).finished: call.args[1]},
                                     count=READ_COUNT, block=call.args[2])

    # -- reads ------------------------------------------------------------------------

    def read_task(self, task_id: str, queues: Sequence[str] | None = None) -> TaskRecord | None:
        """The stored data of ``task_id``, searching every known queue if none is given."""
        candidates = list(queues) if queues else self.known_queues()
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for queue in candidates:
                keys = self.queue_keys(queue)
                for name in TASK_HASHES:
                    pipe.hget(getattr(keys, name), task_id)
            replies = pipe.execute()
        return task_record(task_id, candidates, replies)

    def limits(self, queue: str, most: int = 1000) -> tuple[list[LimitStatus], int]:
        """The limits of ``queue`` (at most ``most`` of them) as Redis holds them now, and
        how many it holds in all (limits.lua: writes nothing)."""
        now, total, *flat = self._run("limits", queue, [most])
        found = []
        for i in range(0, len(flat), 4):
            state = json_object(flat[i + 1])
            rate_count, period = whole_number(state.get("rn")), whole_number(state.get("rp"))
            tokens = state.get("tok")
            found.append(LimitStatus(
                queue=queue, id=as_text(flat[i]), running=whole_number(state.get("run")),
                concurrency=whole_number(state.get("c")), rate_count=rate_count,
                rate_period_ms=period,
                tokens=float(tokens) if rate_count and isinstance(tokens, (int, float))
                else None,
                waiting=int(flat[i + 2]),
                next_waiter_since_ms=int(flat[i + 3]) if flat[i + 3] else None))
        found.sort(key=lambda limit: limit.id)
        return found, int(total)

    def peek(self, queue: str, ids: Sequence[str], whole: int = 0, cut: int = 0) -> list:
        """Bounded reads of tasks for the admin and the CLI (peek.lua): per id, its
        message's head, the message's size and its record, then with ``whole`` its
        message, error history (and size) and result (and size), each whole up to
        ``whole`` bytes, else its first ``cut``. A flat list, 3 or 8 entries per id."""
        return self._run("peek", queue, [whole, cut, *ids]) if ids else []

    def counts(self, queue: str) -> dict[str, int]:
        """How many tasks each state holds in ``queue``."""
        keys = self.queue_keys(queue)
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for state in STATES:
                pipe.zcard(getattr(keys, state))
            return dict(zip(STATES, pipe.execute(), strict=True))

    # -- worker registry --------------------------------------------------------------

    def heartbeat_worker(self, worker_id: str, info: dict[str, str], ttl: float) -> None:
        """Announce a live worker host (for the admin) until ``ttl`` seconds from now."""
        now_ms = self.server_time_ms()  # a host with a skewed clock must not evict others
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(self.keys.workers, {worker_id: now_ms + int(ttl * 1000)})
            pipe.hset(self.keys.worker(worker_id), mapping=info)
            pipe.expire(self.keys.worker(worker_id), int(ttl) + 1)
            pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms)
            pipe.execute()

    def remove_worker(self, worker_id: str) -> None:
        with self.translate_errors():
            self.client.zrem(self.keys.workers, worker_id)
            self.client.delete(self.keys.worker(worker_id))
