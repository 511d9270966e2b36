"""The only code that talks to Redis: one method per state transition or read.

Every state change is one Lua script (broker/lua). redis-py may resend a script after a
connection error, so each script is safe to apply twice. Connection failures surface as
BrokerUnavailable; callers decide whether to retry.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from ..exceptions import BgTasksError, BrokerUnavailable
from .connection import Client, unreachable
from .journal import EnqueueJournal
from .keys import STATES, GlobalKeys, QueueKeys
from .queue_waiter import QueueWaiter
from .scripts import register_scripts
from .sentinel_watch import is_sentinel_client, master_address, watch_master_switches

# Redis errors that mean "not now", not "never": retry later. A failover shows as any of
# these (a cluster: CLUSTERDOWN, TRYAGAIN; Sentinel: the master unknown for a moment).
logger = logging.getLogger("django_bgtasks")

TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
                    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
                    redis.exceptions.MasterDownError, redis.exceptions.SlotNotCoveredError)
# Replies of a server that is changing roles or starting: the same command succeeds later.
TRANSIENT_REPLIES = ("NOREPLICAS", "READONLY", "LOADING", "UNBLOCKED", "TRYAGAIN",
                     "CLUSTERDOWN", "MASTERDOWN")


def ride_out(call: Callable[[], Any], seconds: float) -> Any:
    """``call()``, retried with backoff (50 ms doubling to 250 ms) for up to ``seconds``
    while it fails with "Redis is away or failing over"; any other error, or the last
    one, is raised."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return call()
        except BgTasksError as exc:
            delay = min(0.25, 0.05 * 2 ** attempt)
            if not worth_retrying(exc) or time.monotonic() + delay > deadline:
                raise
            attempt += 1
            time.sleep(delay)


def worth_retrying(exc: BgTasksError) -> bool:
    """True when ``exc`` says Redis is away or failing over; a refused password is not
    (redis-py makes it a ConnectionError, but it stays refused: fail at once)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, redis.AuthenticationError):
            return False
        cause = cause.__cause__
    return isinstance(exc, BrokerUnavailable) or (
        exc.__cause__ is not None and is_transient(exc.__cause__))


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means "Redis is away or failing over", not "refused"."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(TRANSIENT_REPLIES)


@dataclass(frozen=True)
class EnqueueRequest:
    queue: str
    id: str
    message: str
    priority: int
    max_retries: int
    run_at_ms: int | None = None
    delay_ms: int | None = None
    unique_key: str | None = None
    unique_ttl_ms: int | None = None


@dataclass(frozen=True)
class EnqueueOutcome:
    status: str  # 'ok', 'exists' or 'locked'
    state: str  # on 'ok': 'pending' or 'scheduled'
    holder_id: str  # on 'exists' / 'locked': the id that holds the name or lock
    due_ms: int | None
    # on 'ok': when the record says it was enqueued (Redis' clock), as get_task_info reads it
    enqueued_ms: int | None = None


@dataclass(frozen=True)
class Ack:
    """How one claimed attempt ended, sent with the worker's next claim."""

    id: str
    attempt: int
    outcome: str  # 'done', 'retry', 'dead' or 'requeue'
    result: str = ""  # done: the return value as JSON
    result_ttl_ms: int | None = None  # done: keep the record this long; None drops it
    delay_ms: int = 0  # retry
    error: str = ""  # retry / dead: one line
    traceback: str = ""

    def fields(self) -> list[Any]:
        if self.outcome == "done":
            ttl = "" if self.result_ttl_ms is None else self.result_ttl_ms
            return [self.id, self.attempt, "done", self.result, ttl, ""]
        if self.outcome == "retry":
            return [self.id, self.attempt, "retry", self.delay_ms, self.error, self.traceback]
        return [self.id, self.attempt, self.outcome, "", self.error, self.traceback]


@dataclass(frozen=True)
class ClaimedTask:
    id: str
    raw_message: bytes | None
    attempt: int


@dataclass(frozen=True)
class ClaimResult:
    ignored: list[str]  # acks that no longer applied (lease lost, already acked)
    claimed: list[ClaimedTask]
    # (id, error) of popped tasks no worker could run (no message, damaged record, an id
    # that is not text): the claim sent them to the dead queue itself.
    killed: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class DueResult:
    """Outcome of a periodic sweep (forward or recover) and when the next one is due."""

    moved: list[str] | int
    killed: list[str]
    more: bool
    next_ms: int | None
    now_ms: int

    def seconds_until_next(self, cap: float) -> float:
        if self.more:
            return 0.0
        if self.next_ms is None:
            return cap
        return max(0.0, min(cap, (self.next_ms - self.now_ms) / 1000))


@dataclass(frozen=True)
class TaskRecord:
    """A task's raw stored data, as read for TaskInfo and the admin."""

    queue: str
    id: str
    raw_message: bytes | None
    raw_info: bytes | None
    raw_errors: bytes | None
    raw_result: bytes | None


@dataclass(frozen=True)
class PeriodicTick:
    """One tick a scheduler proposes: its time, and the task it would enqueue."""

    tick_ms: int
    id: str
    message: str


@dataclass(frozen=True)
class FireOutcome:
    """What cron_fire did: 'fired', 'nothing due', 'disabled', 'started' or 'skipped'."""

    outcome: str
    fired: list[str]
    last_ms: int


ENQUEUE_BATCH = 1000  # tasks per enqueue call: bounded work inside Redis (~10 ms)
ENQUEUE_FIELDS = 8  # script arguments per task (enqueue.lua)
WAKER_TTL_MS = 10_000  # a wake-up token nobody took (its process had already left)


def _enqueue_fields(req: EnqueueRequest) -> list[Any]:
    return [req.id, req.message, req.priority,
            "" if req.run_at_ms is None else req.run_at_ms,
            "" if req.delay_ms is None else req.delay_ms,
            req.unique_key or "", req.unique_ttl_ms or 0, req.max_retries]


def _enqueue_outcomes(reply: list) -> list[EnqueueOutcome]:
    outcomes = []
    for i in range(0, len(reply), 4):
        status, value, due, enqueued = (_text(part) for part in reply[i:i + 4])
        if status == "ok":
            outcomes.append(EnqueueOutcome("ok", value, "", int(float(due)) if due else None,
                                           int(float(enqueued)) if enqueued else None))
        else:
            outcomes.append(EnqueueOutcome(status, "", value, None))
    return outcomes


CACHE_LIMIT = 256  # queues whose keys a process keeps: names can come from a URL


def _remember(cache: dict, key: Any, value: Any) -> Any:
    """``cache[key] = value``, emptying the cache first when it is full: any queue name an
    admin URL carries reaches these caches, and a process must not grow with them."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _socket_timeout(client: Any) -> float | None:
    """The socket timeout ``client`` was made with (plain, Sentinel or cluster), if any."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs is None:
        kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None)
    value = (kwargs or {}).get("socket_timeout")
    return float(value) if value else None


def _encode_arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def _json_object(raw: bytes | str) -> dict[str, Any]:
    """A stored JSON object; anything else (damage from outside) reads as empty."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


class RedisBroker:
    """Named operations over one Redis client, for one key prefix."""

    def __init__(self, connection: Client, prefix: str, wait_replicas: int = 0,
                 wait_timeout: float = 0.5, watch_master: bool = True,
                 journal_seconds: float = 0.0) -> None:
        self.client = connection.redis
        self.target = connection.target
        self.kind = connection.kind
        self.retry_for = connection.retry_for
        self._cluster = connection.kind == "cluster"
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = max(1, int(wait_timeout * 1000))
        self._queue_waiter: QueueWaiter | None = None
        self._node_pools: dict[str, Any] = {}  # cluster: queue -> its master's pool
        # Behind Sentinel: what was enqueued lately, written again to a new master.
        self._journal = (EnqueueJournal(journal_seconds) if journal_seconds > 0 and (
            self._cluster or is_sentinel_client(self.client)) else None)
        self._master_watch = (watch_master_switches(self.client, self._master_switched)
                              if watch_master else None)
        self.keys = GlobalKeys(prefix)
        self._prefix = prefix
        self._queue_keys: dict[str, QueueKeys] = {}
        self._scripts = register_scripts(self.client)
        self._packed_heads: dict[tuple[str, str, int], bytes] = {}
        # A blocking wait must end well before the socket times out, or every idle wait
        # would be reported as "cannot reach Redis" and reconnect.
        socket_timeout = _socket_timeout(self.client)
        self._blocking_slice = socket_timeout / 2 if socket_timeout else float("inf")

    # -- plumbing ---------------------------------------------------------------------

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise self._translated(exc) from exc

    def _translated(self, exc: Exception) -> BgTasksError:
        """Our exception for a redis-py one, naming the target (never its credentials)."""
        if isinstance(exc, (redis.exceptions.RedisClusterException, *TRANSIENT_ERRORS)):
            return unreachable(self.target, exc)  # a refused password included
        detail = str(exc).rstrip(".")  # messages go on with "; retrying in ..."
        if is_transient(exc):  # reached, but changing roles or starting (NOREPLICAS...)
            return BrokerUnavailable(f"Redis at {self.target} cannot take this now (a "
                                     f"failover or a restart): {detail}")
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            return BgTasksError(
                f"Redis at {self.target} is out of memory (used memory > maxmemory, policy "
                f"noeviction) and refused the command; nothing was written: {detail}")
        if isinstance(exc, redis.ResponseError):
            return BgTasksError(f"Redis at {self.target} refused the command: {detail}")
        return BgTasksError(f"Redis at {self.target}: {detail}")

    def queue_keys(self, queue: str) -> QueueKeys:
        keys = self._queue_keys.get(queue)
        if keys is None:
            keys = _remember(self._queue_keys, queue, QueueKeys(self._prefix, queue))
        return keys

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
            _remember(self._packed_heads, (name, queue, len(args)), head)
        body = b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in map(_encode_arg, args))
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
            pool = _remember(self._node_pools, queue, node.redis_connection.connection_pool)
        return pool

    def ping(self) -> None:
        """Raise BrokerUnavailable unless Redis answers."""
        with self.translate_errors():
            self.client.ping()

    def close(self, close_client: bool = True) -> None:
        """Stop this broker's threads; close the client unless it is shared (a
        django-redis cache's client belongs to the cache framework)."""
        if self._master_watch is not None:
            self._master_watch.stop()
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
        keys = self.queue_keys(queue)
        node = (self.client.get_node_from_key(keys.pending).redis_connection
                if self._cluster else self.client)
        with self.translate_errors():
            pipe = node.pipeline(transaction=False)
            self._scripts[name](keys=[*keys.all, *extra_keys], args=list(args), client=pipe)
            pipe.wait(self._wait_replicas, self._wait_timeout_ms)
            reply, confirmed = pipe.execute()
        if confirmed < self._wait_replicas:
            raise BrokerUnavailable(
                f"Redis at {self.target} wrote the task, but {confirmed} of "
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
        reply = ride_out(lambda: run("enqueue", queue, args, [listed]), self.retry_for)
        if reply and _text(reply[0]) == "unlisted":
            reply = reply[1:]
            try:
                self.register_queue(queue)
            except BgTasksError as exc:  # the tasks are written; the next enqueue lists it
                logger.warning("queue %s could not be listed for the admin yet: %s", queue,
                               exc)
        if notes is not None:
            again = notes.record(queue, args, self._master_of(queue), switches)
            if again:
                self._write_again(again, "an acknowledgement came from a new master")
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
            if again:
                self._write_again(again, f"Sentinel switched to {master[0]}:{master[1]}")

    def _write_again(self, calls: Sequence[tuple[str, Sequence[Any]]], why: str) -> None:
        """Write journaled enqueue calls to the current master, in batches per queue: what
        it has is reported as existing, what the old master dropped is written again."""
        batches: dict[str, list[Any]] = {}
        for queue, args in calls:
            batches.setdefault(queue, []).extend(args[1:])  # args[0]: the wake channel
        per_call = ENQUEUE_BATCH * ENQUEUE_FIELDS
        for queue, fields in batches.items():
            try:
                for start in range(0, len(fields), per_call):
                    self._write_tasks(queue, [self.keys.wake_channel,
                                              *fields[start:start + per_call]], journal=False)
            except BgTasksError as exc:
                logger.error("could not write %d recent task(s) of queue %s again after a "
                             "master switch (%s): %s", len(fields) // ENQUEUE_FIELDS, queue,
                             why, exc)
                continue
            if self._journal is not None:
                self._journal.replayed += len(fields) // ENQUEUE_FIELDS
        logger.warning("wrote the enqueues of the last %gs again (%s): %d task(s); those the "
                       "new master had are unchanged", self._journal.window if self._journal
                       else 0, why, sum(len(f) for f in batches.values()) // ENQUEUE_FIELDS)

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
            return sorted(_text(q) for q in self.client.smembers(self.keys.queues))

    def pause(self, queue: str) -> None:
        with self.translate_errors():
            self.client.set(self.queue_keys(queue).paused, "1")

    def resume(self, queue: str) -> None:
        with self.translate_errors():
            self.client.delete(self.queue_keys(queue).paused)

    # -- transitions ------------------------------------------------------------------

    def enqueue(self, req: EnqueueRequest) -> EnqueueOutcome:
        """Write a new task (pending, or scheduled when due later)."""
        reply = self._write_tasks(req.queue, [self.keys.wake_channel, *_enqueue_fields(req)])
        return _enqueue_outcomes(reply)[0]

    def enqueue_many(self, reqs: Sequence[EnqueueRequest]) -> list[EnqueueOutcome]:
        """Write many tasks: one script call per queue and batch of ENQUEUE_BATCH."""
        outcomes: dict[int, EnqueueOutcome] = {}
        by_queue: dict[str, list[int]] = {}
        for index, req in enumerate(reqs):
            by_queue.setdefault(req.queue, []).append(index)
        for queue, indexes in by_queue.items():
            for start in range(0, len(indexes), ENQUEUE_BATCH):
                chunk = indexes[start:start + ENQUEUE_BATCH]
                args: list[Any] = [self.keys.wake_channel]
                for index in chunk:
                    args += _enqueue_fields(reqs[index])
                replies = _enqueue_outcomes(self._write_tasks(queue, args))
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
        ignored, flat, killed = self._run(
            "claim", queue, args,
            [keys.stats("processed", day), keys.stats("failed", day), keys.claims])
        claimed = [ClaimedTask(_text(flat[i]), flat[i + 1], int(flat[i + 2]))
                   for i in range(0, len(flat), 3)]
        return ClaimResult([_text(i) for i in ignored], claimed,
                           [(_text(killed[i]), _text(killed[i + 1]))
                            for i in range(0, len(killed), 2)])

    def extend_leases(self, queue: str, leases: Sequence[tuple[str, int]],
                      lease_ms: int) -> list[str]:
        """Renew leases; returns the ids whose lease this worker no longer holds."""
        args: list[Any] = [lease_ms]
        for task_id, attempt in leases:
            args += [task_id, attempt]
        return [_text(i) for i in self._run("extend", queue, args)]

    def forward_due(self, queue: str, limit: int = 100) -> DueResult:
        """Move due scheduled and retry tasks to pending."""
        moved, more, next_due, now = self._run("forward", queue, [limit])
        return DueResult(int(moved), [], bool(more), next_due, int(now))

    def recover_expired(self, queue: str, dead_max_tasks: int, dead_max_age_ms: int,
                        limit: int = 100, lease_ms: int = 0) -> DueResult:
        """Return tasks whose lease expired to pending (or dead when out of attempts).
        When nobody swept for half of ``lease_ms`` (Redis stalled or out of reach), wait
        ``lease_ms`` first, for live workers to renew (0: no such grace)."""
        keys = self.queue_keys(queue)
        recovered, killed, next_expiry, now = self._run(
            "recover", queue, [limit, dead_max_tasks, dead_max_age_ms, lease_ms],
            [keys.claims, keys.swept])
        return DueResult([_text(i) for i in recovered], [_text(i) for i in killed],
                         len(recovered) + len(killed) >= limit, next_expiry, int(now))

    def release_worker(self, queue: str, worker_id: str, error: str, dead_max_tasks: int,
                       dead_max_age_ms: int) -> tuple[list[str], list[str]]:
        """A worker process is known dead: return its active tasks now, as recover_expired
        would once their leases expire. Returns (ids back to pending, ids now dead)."""
        back, dead = self._run("release", queue,
                               [worker_id, error, dead_max_tasks, dead_max_age_ms],
                               [self.queue_keys(queue).claims])
        return [_text(i) for i in back], [_text(i) for i in dead]

    # -- periodic tasks ---------------------------------------------------------------

    def fire_periodic(self, queue: str, name: str, spec_id: str, mark_ms: int, policy: str,
                      max_lateness_ms: int | None, overlap: str, priority: int,
                      max_retries: int, ticks: Sequence[PeriodicTick],
                      omitted: str = "0") -> FireOutcome:
        """Offer ``ticks`` (ascending) of entry ``name``; Redis admits each due tick newer
        than the entry's mark exactly once, whichever host offers it (cron_fire.lua).
        ``omitted`` counts the older due ticks not offered ("50", or "10000+")."""
        keys = self.queue_keys(queue)
        args: list[Any] = [name, spec_id, mark_ms, policy,
                           "" if max_lateness_ms is None else max_lateness_ms, overlap,
                           priority, max_retries, omitted]
        for tick in ticks:
            args += [tick.tick_ms, tick.id, tick.message]
        outcome, fired, last = self._run("cron_fire", queue, args,
                                         [keys.cron, keys.cron_history(name)])
        return FireOutcome(_text(outcome), [_text(i) for i in fired], int(last))

    def enable_periodic(self, queue: str, name: str, enabled: bool, mark_ms: int) -> bool:
        """Switch entry ``name`` on or off; True when that changed something."""
        keys = self.queue_keys(queue)
        return bool(self._run("cron_enable", queue, [name, "1" if enabled else "0", mark_ms],
                              [keys.cron, keys.cron_history(name)]))

    def run_periodic_now(self, queue: str, name: str, task_id: str, message: str,
                         priority: int, max_retries: int) -> str:
        """Enqueue entry ``name``'s task now, outside its schedule, and note it in the
        entry's history (cron_run.lua). Returns 'ok', or 'exists' when ``task_id`` holds
        another message (the same request, sent again, returns 'ok')."""
        keys = self.queue_keys(queue)
        status, _state = self._run("cron_run", queue,
                                   [name, task_id, message, priority, max_retries],
                                   [keys.cron, keys.cron_history(name),
                                    keys.cron_request(task_id)])
        return _text(status)

    def periodic_states(self, queue: str) -> dict[str, dict[str, Any]]:
        """Every entry's stored state in ``queue`` (last tick mark, enabled, last task)."""
        with self.translate_errors():
            raw = self.client.hgetall(self.queue_keys(queue).cron)
        return {_text(name): _json_object(value) for name, value in raw.items()}

    def periodic_history(self, queue: str, name: str) -> list[dict[str, Any]]:
        """The entry's last 100 tick outcomes, newest first."""
        with self.translate_errors():
            raw = self.client.lrange(self.queue_keys(queue).cron_history(name), 0, -1)
        return [_json_object(item) for item in raw]

    def clean(self, queue: str, dead_max_tasks: int, dead_max_age_ms: int,
              limit: int = 200) -> tuple[int, int, int, bool]:
        """Trim dead tasks, expired results and expired unique locks (one bounded batch)."""
        dead, completed, locks, more = self._run(
            "janitor", queue, [dead_max_tasks, dead_max_age_ms, limit])
        return int(dead), int(completed), int(locks), bool(more)

    def requeue(self, queue: str, ids: Sequence[str]) -> list[str]:
        """Run now: scheduled, retry or dead tasks to pending. Returns the ids moved."""
        return [_text(i) for i in self._run("requeue", queue, list(ids))] if ids else []

    def delete(self, queue: str, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete tasks not running. Returns (deleted ids, refused active ids)."""
        if not ids:
            return [], []
        deleted, refused = self._run("delete", queue, list(ids))
        return [_text(i) for i in deleted], [_text(i) for i in refused]

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
        key = _text(reply[0])
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

    # -- reads ------------------------------------------------------------------------

    def read_task(self, task_id: str, queues: Sequence[str] | None = None) -> TaskRecord | None:
        """The stored data of ``task_id``, searching every known queue if none is given."""
        candidates = list(queues) if queues else self.known_queues()
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for queue in candidates:
                keys = self.queue_keys(queue)
                pipe.hget(keys.msg, task_id)
                pipe.hget(keys.info, task_id)
                pipe.hget(keys.errors, task_id)
                pipe.hget(keys.result, task_id)
            replies = pipe.execute()
        for index, queue in enumerate(candidates):
            msg, info, errors, result = replies[index * 4:index * 4 + 4]
            if msg is not None or info is not None:
                return TaskRecord(queue, task_id, msg, info, errors, result)
        return None

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


class ScheduleWaiter:
    """Sleeps until a timeout or until some enqueue publishes an earlier due time."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._pubsub = None

    def wait(self, timeout: float) -> bool:
        """True when woken by a publication, False on timeout."""
        deadline = time.monotonic() + timeout
        with self._broker.translate_errors():
            try:
                if self._pubsub is None:
                    self._pubsub = self._broker.client.pubsub(ignore_subscribe_messages=True)
                    self._pubsub.subscribe(self._broker.keys.wake_channel)
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    if self._pubsub.get_message(timeout=remaining) is not None:
                        return True
            except TRANSIENT_ERRORS:
                self.close()
                raise

    def close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            finally:
                self._pubsub = None
