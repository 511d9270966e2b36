"""``bgtasks workflow`` and ``bgtasks workflows``: a workflow, and the recent ones, as text
and JSON (read through ops.workflows, as the admin's workflow pages are)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from ..ops.display import shorten
from ..ops.workflows import FinalMember
from ..workflows.info import Member, WorkflowInfo
from .cli_format import table, when_text

RESULT_WIDTH = 200  # characters of a final member's result in the text


def workflow_data(info: WorkflowInfo, finals: Sequence[FinalMember],
                  members: Sequence[Member]) -> dict[str, Any]:
    """Every WorkflowInfo field, how far it got, its final members and the members given;
    the keys in docs/commands.md."""
    data = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    data["steps"] = [list(step) for step in info.steps]
    return {**data, "ended": info.ended, "progress": round(info.progress, 4),
            "finals": [final_data(final) for final in finals],
            "members": [dataclasses.asdict(member) for member in members]}


def final_data(final: FinalMember) -> dict[str, Any]:
    """A final member's row, and its task's name, error and result when it is stored: the
    result decoded when it was read whole (``result_bytes``: its stored size)."""
    info = final.detail.info if final.detail else None
    whole = final.detail is not None and final.detail.result.whole
    return {"label": final.label, **dataclasses.asdict(final.member),
            "stored": info is not None, "name": info.name if info else None,
            "last_error": info.last_error if info else "",
            "cancelled_by": info.cancelled_by if info else None,
            "result": info.result if info and whole else None,
            "result_bytes": final.detail.result.size if final.detail else 0}


def workflow_text(info: WorkflowInfo, finals: Sequence[FinalMember],
                  members: Sequence[Member]) -> str:
    """The workflow for a human: its facts, its final members, then ``members`` (the
    first of them, the caller says how many) and how many there are."""
    state = info.state + (f": {info.reason}" if info.reason else "")
    lines = [
        f"id:           {info.id}",
        f"kind:         {info.kind}",
        f"shape:        {info.shape}",
        f"state:        {state}",
        f"progress:     {info.ended} of {info.size} members ended ({info.progress:.0%})",
        f"by state:     {counts_text(info)}",
        f"created at:   {when_text(info.created_at)}",
        f"finished at:  {when_text(info.finished_at)}",
    ]
    for final in finals:
        lines.append(f"{final.label.lower() + ':':<13} {final_text(final)}")
    lines.append("")
    if members:
        lines.append(table(["#", "id", "step", "role", "queue", "state"],
                           [[m.index, m.id, str(m.step), m.role, m.queue, m.state]
                            for m in members]))
    shown = "every member" if len(members) == info.size else \
        f"{len(members)} of {info.size} members (--limit N for more, --json for all)"
    lines.append(f"Listed {shown}.")
    return "\n".join(lines)


def final_text(final: FinalMember) -> str:
    """'<id> (<name>, queue default): completed, result: 14'."""
    member, detail = final.member, final.detail
    if detail is None:
        return f"{member.id} (queue {member.queue!r}): {member.state}, not stored any more"
    info = detail.info
    text = f"{member.id} ({info.name}, queue {member.queue!r}): {member.state}"
    if info.cancelled_by:
        text += f", cancelled by {info.cancelled_by}"
    if info.last_error:
        text += f", last error: {shorten(info.last_error, RESULT_WIDTH)}"
    if not detail.result.whole:
        text += f", result: {detail.result.size:,} bytes (bgtasks show {member.id})"
    elif info.result is not None or info.state == "completed":
        text += f", result: {shorten(json.dumps(info.result), RESULT_WIDTH)}"
    return text


def counts_text(info: WorkflowInfo) -> str:
    """'completed 3, dead 1' in STATES order ('-' for none)."""
    return ", ".join(f"{state} {n}" for state, n in info.counts.items()) or "-"


def workflows_data(infos: Sequence[WorkflowInfo]) -> dict[str, Any]:
    """{"workflows": [...]}: each as the list reads it (no members, no live states)."""
    return {"workflows": [
        {"id": i.id, "kind": i.kind, "shape": i.shape, "state": i.state, "reason": i.reason,
         "size": i.size, "ended": i.ended, "counts": i.counts, "created_at": i.created_at,
         "finished_at": i.finished_at} for i in infos]}


def workflows_text(infos: Sequence[WorkflowInfo]) -> str:
    """One line per workflow, newest first."""
    if not infos:
        return ("No workflow is kept: none was enqueued (chain, group, chord, depends_on), "
                "or they ended more than WORKFLOW_KEEP ago.")
    return table(["id", "kind", "shape", "state", "ended", "size", "created", "finished"],
                 [[i.id, i.kind, shorten(i.shape, 60), _state(i), i.ended, i.size,
                   when_text(i.created_at), when_text(i.finished_at)] for i in infos])


def _state(info: WorkflowInfo) -> str:
    return info.state + (f": {shorten(info.reason, 60)}" if info.reason else "")

