"""Task: an unmanaged model with no table. It exists so that the admin lists the app and
so that ``view``, ``change`` and ``delete`` permissions (and LogEntry rows) have a
content type; the tasks themselves live only in Redis."""

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
