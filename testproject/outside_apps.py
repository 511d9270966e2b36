"""A module outside INSTALLED_APPS, with a Django task. The worker must refuse a task that
names it without importing it: importing it records "outside_apps imported"."""

from django.tasks import task

from demo import recording

recording.record("outside_apps imported")


@task
def record(token: str) -> str:
    """Record `token` (it must never run on our worker)."""
    recording.record(token)
    return token
