"""The app's admin views; TaskAdmin.get_urls and PeriodicTaskAdmin.get_urls (admin.py)
route to them."""

from .actions import task_action
from .detail import task_detail, task_download
from .limits_page import limits_page
from .pages import dashboard, task_list
from .periodic import periodic_action, periodic_detail, periodic_list
from .settings_page import settings_page
from .taskstats_page import taskstats_page
from .workflows import workflow_cancel, workflow_detail, workflow_list

__all__ = ["dashboard", "limits_page", "periodic_action", "periodic_detail", "periodic_list",
           "task_action", "settings_page", "taskstats_page", "task_detail", "task_download",
           "task_list",
           "workflow_cancel", "workflow_detail", "workflow_list"]
