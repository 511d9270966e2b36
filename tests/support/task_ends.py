"""Ending a queued task as 'cancelled' or 'expired' through _common.lua's end_unrun, the
way the cancel and expiry transitions do: for tests of what follows such an end (waiting
for a result) that do not need those transitions themselves."""

from __future__ import annotations

from django_bgtasks.broker import get_broker
from django_bgtasks.broker.scripts import LUA_DIR

# The caller's part of a transition that ends a queued task: out of its set, then
# end_unrun (which announces the end to waiters). KEYS: the queue's keys; ARGV: id, state.
BODY = """
local id, state = ARGV[1], ARGV[2]
local found = 0
for _, set in ipairs({K_PENDING, K_SCHEDULED, K_RETRY, K_WAITING}) do
  found = found + redis.call('ZREM', set, id)
end
if found == 0 then return 0 end
local zset = K_CANCELLED
if state == 'expired' then zset = K_EXPIRED end
end_unrun(id, get_info(id), state, zset, now_ms())
return 1
"""


def end_unrun(task_id: str, state: str, queue: str = "default") -> None:
    """End the queued task ``task_id`` of ``queue`` as ``state`` ('cancelled', 'expired')."""
    broker = get_broker()
    script = broker.client.register_script((LUA_DIR / "_common.lua").read_text() + BODY)
    assert script(keys=list(broker.queue_keys(queue).all), args=[task_id, state]) == 1
