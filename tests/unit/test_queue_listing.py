"""Queues are found again after Redis loses its data, and a URL's queue names cannot grow
a process's memory."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from demo import tasks
from django_bgtasks import get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.packing import CACHE_LIMIT
from helpers import wait_until


def test_a_queue_is_listed_again_after_redis_lost_its_data(broker, raw):
    tasks.record.using(queue_name="mail").enqueue("before")
    assert "mail" in broker.known_queues()

    raw.flushall()  # a FLUSHALL, or a restart without persistence
    task_id = tasks.record.using(queue_name="mail").enqueue("after").id

    assert "mail" in broker.known_queues()
    assert get_task_info(task_id).queue_name == "mail"


def test_many_tasks_in_one_call_list_their_queue_again_too(broker, raw):
    tasks.record.using(queue_name="mail").enqueue("before")
    raw.flushall()
    results = tasks.record.using(queue_name="mail").enqueue_many([(["a"], {}), (["b"], {})])
    assert [r.id for r in results] and "mail" in broker.known_queues()
    assert get_task_info(results[1].id).args == ["b"]


def test_a_running_worker_lists_its_queues_again(start_worker, raw, broker):
    start_worker("--processes", "1", "--threads", "1", "--queues", "default,mail")
    wait_until(lambda: {"default", "mail"} <= set(broker.known_queues()), timeout=10,
               message="the worker listed its queues")
    raw.flushall()
    wait_until(lambda: {"default", "mail"} <= set(broker.known_queues()), timeout=8,
               message="the worker listed its queues again")


@pytest.mark.django_db
def test_queue_names_from_urls_do_not_grow_the_process(raw):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    broker = get_broker()
    for i in range(CACHE_LIMIT * 3):
        response = client.get("/admin/django_bgtasks/task/pending/", {"queue": f"q{i}"})
        assert response.status_code == 200
    assert len(broker._queue_keys) <= CACHE_LIMIT
