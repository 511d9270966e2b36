"""Task and PeriodicTask: unmanaged models with no table. They exist so that the admin
lists the app and so that their permissions (and LogEntry rows) have a content type; the
tasks and the periodic entries' state live only in Redis."""

from __future__ import annotations

from django.db import models


class Task(models.Model):
    """A task as the admin names it in permissions and in its action log."""

    id = models.CharField(primary_key=True, max_length=255)
    name = models.CharField(max_length=255, blank=True)

    class Meta:
        managed = False
        default_permissions = ("view", "change", "delete")
        verbose_name = "task"
        verbose_name_plural = "tasks"

    def __str__(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id


class PeriodicTask(models.Model):
    """A periodic entry as the admin names it in permissions and in its action log; the
    entries are declared in code and their state lives in Redis."""

    name = models.CharField(primary_key=True, max_length=255)
    task_name = models.CharField(max_length=255, blank=True)

    class Meta:
        managed = False
        default_permissions = ("view", "change")
        verbose_name = "periodic task"
        verbose_name_plural = "periodic tasks"

    def __str__(self) -> str:
        return self.name
