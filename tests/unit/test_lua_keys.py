"""The scripts unpack the queue's keys in the order keys.QUEUE_KEY_NAMES gives them: the
two lists are kept in step by hand, so this fails the moment they differ."""

from __future__ import annotations

import re

from django_bgtasks.broker.keys import QUEUE_KEY_NAMES
from django_bgtasks.broker.scripts import LUA_DIR


def test_common_lua_names_the_queue_keys_in_their_python_order():
    text = (LUA_DIR / "_common.lua").read_text()
    unpacked: dict[int, str] = {}
    for names, keys in re.findall(r"^local ((?:K_\w+(?:, )?)+) = ((?:KEYS\[\d+\](?:, )?)+)$",
                                  text, re.M):
        for name, key in zip(names.split(", "), keys.split(", "), strict=True):
            unpacked[int(re.search(r"\d+", key).group())] = name.removeprefix("K_").lower()
    assert [unpacked[i] for i in sorted(unpacked)] == list(QUEUE_KEY_NAMES)
    assert sorted(unpacked) == list(range(1, len(QUEUE_KEY_NAMES) + 1))
