"""Loads the Lua transitions (broker/lua/*.lua), each prefixed with _common.lua."""

from __future__ import annotations

from functools import cache
from pathlib import Path

LUA_DIR = Path(__file__).with_name("lua")
SCRIPT_NAMES = (
    "enqueue", "claim", "extend", "forward", "recover", "release", "janitor", "requeue",
    "delete", "cancel", "cron_fire", "cron_enable", "cron_run", "peek", "limits",
    "bulk_queue", "bulk_claim", "bulk_step", "bulk_release", "watch", "unwatch",
    "wf_barrier", "wf_release", "wf_watch", "wf_settle", "pending_age", "metrics_roll",
)
# Scripts that run in a slot of their own, not a queue's: no queue prelude.
STANDALONE = frozenset({"wf_barrier", "wf_settle", "pending_age", "metrics_roll"})
# Only enqueue, cron_fire and cron_run add tasks. Under maxmemory with noeviction, Redis
# refuses them (the caller gets a clear error, nothing is written), while every other
# transition works:
# a full Redis can only be emptied by workers claiming, finishing and trimming tasks.
# (Without the flag, Redis 7 refuses a script whose first write needs memory.)
# bulk_queue adds one small record to a bounded hash, and is allowed: "delete all" is how
# an operator empties a full Redis from the admin.
GROWS_MEMORY = frozenset({"enqueue", "cron_fire", "cron_run"})


@cache
def script_source(name: str) -> str:
    """The full text sent to Redis for the transition ``name``."""
    common = "" if name in STANDALONE else (LUA_DIR / "_common.lua").read_text() + "\n"
    shebang = "#!lua\n" if name in GROWS_MEMORY else "#!lua flags=allow-oom\n"
    return shebang + common + (LUA_DIR / f"{name}.lua").read_text()


def register_scripts(client) -> dict:
    """Script objects bound to ``client``; they reload themselves after NOSCRIPT."""
    return {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}
