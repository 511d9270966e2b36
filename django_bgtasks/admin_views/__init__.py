"""The task admin's views; TaskAdmin.get_urls (admin.py) routes to them."""

from .actions import task_action
from .pages import dashboard, task_detail, task_list

__all__ = ["dashboard", "task_action", "task_detail", "task_list"]
