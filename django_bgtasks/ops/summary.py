"""TaskSummary: what a list shows of a task, from a bounded read (broker peek.lua): its
record and its message's head, never the whole message, error history or result. A
list, the name search and the confirmation page read these, so that their cost does not
grow with what the tasks carry (reading whole records, 50 dead tasks of 2.7 MB made one
list page take 9 s and 625 MB of a web process)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from ..broker.types import TaskRecord
from ..info import TaskInfo
from ..message import shorten_raw
from .display import call_args

PREVIEW_CHARS = 200  # of the arguments; a list shows fewer

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class TaskSummary:
    """One task as a list reads it."""

    # Its record, read as TaskInfo reads it; its args and kwargs only when `whole`, its
    # result and error history never.
    info: TaskInfo
    preview: str  # the arguments as a call list ('"a", 2, key=true'), cut with '...'
    message_bytes: int  # the stored message's size
    whole: bool  # the whole message was read (a short one)


def summarize(queue: str, task_id: str, head: bytes | None, size: int,
              raw_info: bytes | None) -> TaskSummary:
    """The summary of one task from what peek.lua read: the message's ``head`` (the
    message itself when it is as long as ``size``) and the record."""
    whole = head is None or len(head) == size
    # A head alone is no message: TaskInfo reads the record, the head is read below.
    info = TaskInfo.from_record(TaskRecord(queue, task_id, head if whole else None, raw_info,
                                           None, None))
    if not whole:
        name, preview, problem = (_writable(text) for text in
                                  _read_head(head.decode("utf-8", "replace")))
        return TaskSummary(replace(info, name=name, message_error=problem), preview, size,
                           False)
    preview = "" if info.message_error else _cut(call_args(info.args, info.kwargs))
    return TaskSummary(info, preview, size, True)


def _read_head(head: str) -> tuple[str, str, str]:
    """(name, preview, problem) from the start of a long message."""
    if not head.startswith("{"):
        return ("<undecodable message>", "",
                f"the task's message is not a JSON object: {shorten_raw(head)}")
    members, cut_member, rest = _members(head)
    name = members.get("name")
    if not isinstance(name, str):
        name = "<name not read>"
    args, kwargs = members.get("args"), members.get("kwargs")
    if isinstance(args, list):
        preview = call_args(args, kwargs if isinstance(kwargs, dict) else {})
        if cut_member == "kwargs":
            preview += (", " if args else "") + rest[1:] + "..."
        return name, _cut(preview), ""
    return name, _cut((rest[1:] if cut_member == "args" else "") + "..."), ""


def _members(text: str) -> tuple[dict[str, Any], str | None, str]:
    """The whole members of a JSON object cut short, then the member cut in its value and
    that value's text so far (None, '' when the text ends between members)."""
    members: dict[str, Any] = {}
    pos, end = 1, len(text)
    while True:
        pos = _SPACE.match(text, pos).end()
        try:
            key, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return members, None, ""
        pos = _SPACE.match(text, pos).end()
        if not isinstance(key, str) or text[pos:pos + 1] != ":":
            return members, None, ""
        pos = _SPACE.match(text, pos + 1).end()
        try:
            value, after = _DECODER.raw_decode(text, pos)
        except ValueError:
            return members, key, text[pos:]
        if after >= end and isinstance(value, (int, float)):  # maybe 12 of 123
            return members, key, text[pos:]
        members[key] = value
        pos = _SPACE.match(text, after).end()
        if text[pos:pos + 1] != ",":
            return members, None, ""
        pos += 1


def _writable(text: str) -> str:
    # A \ud800 escape decodes to half a UTF-16 pair, which no page or terminal can write
    # out (a whole message is checked for them by TaskMessage.decode).
    return text.encode("utf-8", "replace").decode()


def _cut(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 3] + "..."



# A task's page reads each of its message, error history and result whole up to this size
# (the worker keeps a history under ~220 KB), else only the first SHOW_BYTES of it.
WHOLE_BYTES = 256 * 1024


@dataclass(frozen=True)
class StoredPart:
    """One stored JSON value of a task, read whole or in part."""

    raw: bytes | None  # None: not stored
    size: int  # of the whole

    @property
    def whole(self) -> bool:
        return self.raw is None or len(self.raw) == self.size


@dataclass(frozen=True)
class TaskDetail:
    """A task for its page: whatever was read whole, as TaskInfo reads it, and the three
    stored values it comes from (whose parts read in part are shown as stored)."""

    info: TaskInfo
    message: StoredPart
    errors: StoredPart
    result: StoredPart


def detailed(queue: str, task_id: str, reply: list) -> TaskDetail:
    """A TaskDetail from peek.lua's reply for one task, read with whole > 0."""
    head, size, raw_info, msg, errors, errors_size, result, result_size = reply
    message = StoredPart(msg, size)
    history, kept = StoredPart(errors, errors_size), StoredPart(result, result_size)
    info = TaskInfo.from_record(TaskRecord(
        queue, task_id, msg if message.whole else None, raw_info,
        errors if history.whole else None, result if kept.whole else None))
    if not message.whole:  # its name comes from its head
        named = summarize(queue, task_id, head, size, raw_info).info
        info = replace(info, name=named.name, message_error=named.message_error)
    return TaskDetail(info, message, history, kept)
