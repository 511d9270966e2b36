"""Fixtures of the end-to-end tests that stop or stall Redis under a worker: the tasks
record what ran in a second Redis (the ledger) that stays up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from failover import ledger_server_fixture
from helpers import RedisServer

ledger_server = pytest.fixture(scope="module", name="ledger_server")(ledger_server_fixture)


@pytest.fixture
def ledger(ledger_server: RedisServer) -> Iterator[redis.Redis]:
    """The ledger's client, emptied for each test."""
    with ledger_server.client() as client:
        client.flushall()
        yield client
