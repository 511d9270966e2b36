"""TaskSearch: what the task lists (admin and ``bgtasks list``) filter on, read from a
task's summary (ops/summary.py), so that a search costs what a list page costs per task:
its record and its message's head, never its whole message or error history.

Each term is a case-insensitive substring; a task matches when it matches every term given.
- name: the task's name.
- args: its arguments as a list shows them ('"a", 2, key=true'), whole for a message of
  up to 512 bytes (peek.lua's HEAD_BYTES), else as far as its head goes.
- error: its latest error (the record's last_error: "ValueError: boom", up to 2,000
  characters); the earlier attempts' errors are on the task's page.
- worker: the id of the worker of its latest attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .display import call_args
from .summary import TaskSummary

# Each term in a sentence: "name contains 'x'", "arguments contain 'y'".
TERM_WORDS = {"name": "name contains", "args": "arguments contain",
              "error": "latest error contains", "worker": "worker contains"}


@dataclass(frozen=True)
class TaskSearch:
    """Substrings a task's fields must contain (empty: any)."""

    name: str = ""
    args: str = ""
    error: str = ""
    worker: str = ""

    @classmethod
    def from_params(cls, data: Any) -> TaskSearch:
        """From request parameters or options with the same names (stripped)."""
        return cls(**{f.name: (data.get(f.name) or "").strip() for f in fields(cls)})

    def __bool__(self) -> bool:
        return any(self.terms().values())

    def terms(self) -> dict[str, str]:
        """{term: substring} for the terms given."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def describe(self) -> str:
        """The terms in words: "name contains 'mail' and worker contains 'web-1'"."""
        return " and ".join(f"{TERM_WORDS[term]} {value!r}"
                            for term, value in self.terms().items())

    def matches(self, summary: TaskSummary) -> bool:
        """Whether this task (as a list reads it) matches every term given."""
        return all(value.lower() in _text(summary, term).lower()
                   for term, value in self.terms().items())


def _text(summary: TaskSummary, term: str) -> str:
    info = summary.info
    if term == "name":
        return info.name
    if term == "args":
        # A whole message was read: all its arguments; else the preview of its head.
        return call_args(info.args, info.kwargs) if summary.whole else summary.preview
    if term == "error":
        return info.last_error
    return info.worker
