"""Workflows: chains, groups, chords and dependencies on a crash-proof barrier
(docs/workflows.md)."""

from .calls import TaskCall
from .canvas import Chain, Group, chain, chord, group
from .info import Member, WorkflowInfo, WorkflowNotFound, cancel_workflow, get_workflow

__all__ = ["Chain", "Group", "Member", "TaskCall", "WorkflowInfo", "WorkflowNotFound",
           "cancel_workflow", "chain", "chord", "get_workflow", "group"]
