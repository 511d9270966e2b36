"""AsyncBroker: the producer's side of the broker on redis.asyncio, for ASGI views:
enqueue (the same enqueue.lua transition as RedisBroker.enqueue) and read a task.

What it shares with RedisBroker rather than repeats: the script text (scripts.py), the
arguments and reply packing (packing.py), the "transient" policy and the ride-out
schedule (errors.py), the error messages (connection.translated), the enqueue journal
and its replay batches (journal.py), the key names (keys.py).

What differs from the sync broker:

- One client per event loop: redis.asyncio connections belong to the loop that opened
  them. aget_broker() keys brokers by the running loop (weakly: a finished loop's broker
  goes with it); an ASGI server runs one loop, so one broker.
- The enqueue journal is this broker's own (one per loop), fed by its own calls: a
  master switch is learnt from the first acknowledgement from a new address (a
  cluster's slot owner, or the Sentinel pool's master), and that queue's recent calls
  are written again, as the sync broker does, on a task of the loop (the sync broker's
  Replayer thread) that no aenqueue waits for. There is no ``+switch-master`` watcher
  thread per loop: behind Sentinel, redis-py's asyncio pool finds the new master when a
  connection to the old one fails or is refused (READONLY once it is demoted).
- Concurrent enqueue calls of the loop share script calls, per queue (group_commit.py):
  the sync broker's callers are one thread each, with nothing to share.
- WAIT_REPLICAS on a Redis Cluster is refused (WAIT must run on the connection that
  wrote, and the asyncio cluster client does not lend one): use enqueue() there.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis
from django.core.signals import setting_changed

from ..conf import Settings, get_settings
from ..exceptions import BgTasksError, BrokerUnavailable
from . import _connection_key
from .aio_client import make_async_client
from .connection import Client, creation_retry_for, translated
from .core import BrokerCore
from .errors import aride_out
from .group_commit import GroupCommit
from .journal import REPLAY_FAILED, REPLAYED, UNLISTED, replay_batches
from .packing import (
    TASK_HASHES,
    as_text,
    queue_batches,
    socket_timeout,
    split_unlisted,
    task_record,
)
from .scripts import script_source
from .types import Awaited, EnqueueOutcome, EnqueueRequest, TaskRecord
from .waiting import READ_COUNT, Call, waiting_steps

logger = logging.getLogger("django_bgtasks")
T = TypeVar("T")


class AsyncBroker(BrokerCore):
    """Enqueue and look up tasks over one redis.asyncio client, for one key prefix."""

    def __init__(self, connection: Client, prefix: str, wait_replicas: int = 0,
                 wait_timeout: float = 0.5, journal_seconds: float = 0.0) -> None:
        super().__init__(connection, prefix, wait_replicas, wait_timeout)
        self._sentinel_pool = (connection.redis.connection_pool
                               if connection.kind == "sentinel" else None)
        self._journal = self._journal_for(journal_seconds, self._sentinel_pool is not None)
        self._enqueue_script = self.client.register_script(script_source("enqueue"))
        self._watch_scripts = {name: self.client.register_script(script_source(name))
                               for name in ("watch", "unwatch")}
        timeout = socket_timeout(self.client)  # as RedisBroker's blocking waits
        self._blocking_slice = timeout / 2 if timeout else float("inf")
        self._replays: set[asyncio.Task] = set()
        self._group = GroupCommit(self._write_tasks, self.keys.wake_channel)

    async def aclose(self) -> None:
        """Close the client's connections (on the loop that opened them), once the writes
        and journal replays under way are over."""
        await self._group.wait_idle(self.retry_for + 5)
        if self._replays:
            await asyncio.wait(set(self._replays), timeout=self.retry_for + 5)
        await self.client.aclose()

    # -- enqueue ----------------------------------------------------------------------

    async def enqueue_many(self, reqs: Sequence[EnqueueRequest]) -> list[EnqueueOutcome]:
        """Write tasks (one or many), a queue and batch at a time, each batch joining the
        other calls of this loop that wait for the same queue (group_commit.py)."""
        outcomes: dict[int, EnqueueOutcome] = {}
        for queue, chunk in queue_batches(reqs):
            replies = await self._group.enqueue(queue, [reqs[index] for index in chunk])
            outcomes.update(zip(chunk, replies, strict=True))
        return [outcomes[index] for index in range(len(reqs))]

    async def _write_tasks(self, queue: str, args: Sequence[Any], journal: bool = True):
        """RedisBroker._write_tasks on this loop: ride out a failover, list the queue if
        Redis lost its listing, note the call in the journal."""
        notes = self._journal if journal else None
        switches = notes.switches if notes is not None else 0
        unlisted, reply = split_unlisted(
            await aride_out(lambda: self._run_enqueue(queue, args), self.retry_for))
        if unlisted:
            try:
                await self.register_queue(queue)
            except BgTasksError as exc:  # the tasks are written; the next enqueue lists it
                logger.warning(UNLISTED, queue, exc)
        if notes is not None:
            again = notes.record(queue, args, self._master_of(queue), switches)
            if again:  # on a task of its own, as the sync Replayer: no aenqueue waits for it
                replay = asyncio.get_running_loop().create_task(
                    self._write_again(again, "an acknowledgement came from a new master"))
                self._replays.add(replay)  # a task nobody references may be collected
                replay.add_done_callback(self._replays.discard)
        return reply

    async def _run_enqueue(self, queue: str, args: Sequence[Any]) -> list:
        keys = self.queue_keys(queue)
        script_keys = [*keys.all, keys.listed]
        try:
            if not self._wait_replicas:
                return await self._enqueue_script(keys=script_keys, args=list(args))
            if self._cluster:
                raise BgTasksError("aenqueue() cannot WAIT for replicas on a Redis Cluster "
                                   "(WAIT_REPLICAS): use enqueue() there")
            pipe = self.client.pipeline(transaction=False)
            await self._enqueue_script(keys=script_keys, args=list(args), client=pipe)
            pipe.wait(self._wait_replicas, self._wait_timeout_ms)
            reply, confirmed = await pipe.execute()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise translated(self.target, exc) from exc
        if confirmed < self._wait_replicas:  # "not now": ridden out, then the same error
            raise BrokerUnavailable(
                f"Redis at {self.target} wrote the task, but {confirmed} of "
                f"{self._wait_replicas} replicas confirmed it within "
                f"{self._wait_timeout_ms} ms (WAIT_REPLICAS)")
        return reply

    def _master_of(self, queue: str) -> Any:
        """The address of the master that acknowledged ``queue``'s last call."""
        if self._cluster:
            node = self.client.get_node_from_key(self.queue_keys(queue).pending)
            return (node.host, node.port)
        return getattr(self._sentinel_pool, "master_address", None)

    async def _write_again(self, calls: Sequence[tuple[str, Sequence[Any]]], why: str) -> None:
        """Write journaled calls again to the current master (see journal.py)."""
        written = 0
        for queue, args, count in replay_batches(calls, self.keys.wake_channel):
            try:
                await self._write_tasks(queue, args, journal=False)
            except BgTasksError as exc:
                logger.error(REPLAY_FAILED, count, queue, why, exc)
                continue
            written += count
        logger.warning(REPLAYED, self._journal.window if self._journal else 0, why, written)

    async def register_queue(self, queue: str) -> None:
        """RedisBroker.register_queue: the global queue set, then the "listed" marker."""
        try:
            await self.client.sadd(self.keys.queues, queue)
            await self.client.set(self.queue_keys(queue).listed, "1")
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise translated(self.target, exc) from exc

    # -- reads ------------------------------------------------------------------------

    async def read_task(self, task_id: str, queues: Sequence[str] | None = None,
                        ) -> TaskRecord | None:
        """The stored data of ``task_id``, searching every known queue if none is given."""
        try:
            queues = list(queues) if queues else await self._known_queues()
            if not queues:
                return None
            pipe = self.client.pipeline(transaction=False)
            for queue in queues:
                keys = self.queue_keys(queue)
                for name in TASK_HASHES:
                    pipe.hget(getattr(keys, name), task_id)
            replies = await pipe.execute()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise translated(self.target, exc) from exc
        return task_record(task_id, queues, replies)

    async def _known_queues(self) -> list[str]:
        return sorted(as_text(q) for q in await self.client.smembers(self.keys.queues))

    # -- waiting for a task's end (waiting.py; RedisBroker.wait_for_end on this loop) ----

    async def wait_for_end(self, task_id: str, timeout: float) -> Awaited:
        """Wait up to ``timeout`` seconds for ``task_id`` to end, woken by its end's
        stream entry; the loop runs other work meanwhile."""
        steps = waiting_steps(task_id, timeout, self._blocking_slice)
        try:
            call = next(steps)
            while True:
                try:
                    reply = await self._wait_call(call)
                except BaseException as exc:  # a cancelled caller's registration goes too
                    call = steps.throw(exc)
                else:
                    call = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _wait_call(self, call: Call) -> Any:
        if call.kind == "queues":
            return await self._call(self._known_queues())
        if call.kind == "read":
            return await self.read_task(call.args[0], [call.args[1]])
        keys = self.queue_keys(call.args[0])
        if call.kind == "script":
            script = self._watch_scripts[call.args[1]]
            return await self._call(script(keys=list(keys.all), args=call.args[2]))
        return await self._call(self.client.xread({keys.finished: call.args[1]},
                                                  count=READ_COUNT, block=call.args[2]))

    async def _call(self, pending: Awaitable[T]) -> T:
        """Await a command, its redis-py errors as ours."""
        try:
            return await pending
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise translated(self.target, exc) from exc


# -- one broker per event loop ----------------------------------------------------------


class _LoopBrokers:
    """The brokers of one event loop, and a lock so that the first calls of a burst
    make one client, not one each."""

    def __init__(self) -> None:
        self.brokers: dict[tuple, AsyncBroker] = {}
        self.lock = asyncio.Lock()


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBrokers] = \
    weakref.WeakKeyDictionary()


async def aget_broker() -> AsyncBroker:
    """The running loop's broker for the current settings, made on first use (waiting up
    to RETRY_FOR for a cluster that cannot be reached yet, as enqueue() does)."""
    cfg = get_settings()
    loop = asyncio.get_running_loop()
    state = _loops.get(loop)
    if state is None:
        state = _loops[loop] = _LoopBrokers()
    key = _connection_key(cfg)
    broker = state.brokers.get(key)
    if broker is not None:
        return broker
    async with state.lock:
        broker = state.brokers.get(key)
        if broker is None:
            window = creation_retry_for(cfg)
            broker = await (aride_out(lambda: make_async_broker(cfg), window) if window
                            else make_async_broker(cfg))
            state.brokers[key] = broker
    return broker


async def make_async_broker(cfg: Settings | None = None) -> AsyncBroker:
    """A new AsyncBroker on the running loop, not cached (aget_broker() shares one)."""
    cfg = cfg or get_settings()
    return AsyncBroker(await make_async_client(cfg), cfg.PREFIX, cfg.WAIT_REPLICAS,
                       cfg.WAIT_TIMEOUT, journal_seconds=cfg.ENQUEUE_JOURNAL_SECONDS)


async def aclose_brokers() -> None:
    """Close the running loop's brokers (an ASGI lifespan shutdown, a test's end)."""
    state = _loops.pop(asyncio.get_running_loop(), None)
    if state is not None:
        for broker in state.brokers.values():
            await broker.aclose()


def forget_async_brokers(**kwargs: Any) -> None:
    """Settings changed: later calls make new brokers (the old ones' connections close
    with their loop; they cannot be closed from here, outside it)."""
    for state in list(_loops.values()):
        state.brokers.clear()


setting_changed.connect(forget_async_brokers, dispatch_uid="django_bgtasks.forget_async_brokers")
