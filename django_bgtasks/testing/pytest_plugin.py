"""pytest plugin of django-bgtasks (entry point ``pytest11``): the ``bgtasks_capture``
fixture. Reads no Django settings and imports no test helper until a fixture runs, so
that a project (or a test) that does not use it sees no change, pytest-django or not."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def bgtasks_capture() -> Iterator[Any]:
    """A TaskCapture active for the test: tasks enqueued in it are recorded, not run."""
    from django_bgtasks.testing import capture_tasks

    with capture_tasks() as capture:
        yield capture


@pytest.fixture(autouse=True)
def _bgtasks_clear_captured() -> Iterator[None]:
    """Each test starts with an empty BGTASKS["CAPTURE"] capture, as with mail.outbox."""
    _clear()
    yield
    _clear()


def _clear() -> None:
    # Only if capture was ever imported: otherwise there is nothing to clear, and
    # importing it would import Django.
    module = sys.modules.get("django_bgtasks.testing.capture")
    if module is not None:
        module.clear_captured()
