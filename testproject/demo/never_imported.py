"""A module of an installed app that nothing imports at startup, with a Django task bound
to our backend. A "django:demo.never_imported.record" name from Redis must not make the
worker import it: importing it records "demo.never_imported imported"."""

from django.tasks import task

from demo import recording

recording.record("demo.never_imported imported")


@task
def record(token: str) -> str:
    """Record `token` (the worker must refuse to run it)."""
    recording.record(token)
    return token
