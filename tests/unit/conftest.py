"""Fixtures shared by the admin's operability tests (search, task statistics)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client


@pytest.fixture
def enqueue_now(bgtasks_redis, settings):
    """Enqueue at once: each test runs inside a transaction that never commits."""
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


@pytest.fixture
def superuser_client(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client
