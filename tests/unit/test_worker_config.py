"""The worker's --queues parsing and the queue order each claim follows."""

from __future__ import annotations

import random

import pytest

from django_bgtasks.worker.config import WorkerConfig, parse_queues


@pytest.mark.parametrize("spec,expected", [
    ("default", {"default": 1}),
    ("default,mail:3", {"default": 1, "mail": 3}),
    (" default , mail:3 ,", {"default": 1, "mail": 3}),
    ("a:2,b:1,c:10", {"a": 2, "b": 1, "c": 10}),
    ("mail:1", {"mail": 1}),
])
def test_parse_queues(spec, expected):
    result = parse_queues(spec)
    assert result == expected
    assert list(result) == list(expected)  # the order given is kept


@pytest.mark.parametrize("spec,match", [
    ("", "no queue"),
    (" , ,", "no queue"),
    ("mail:x", "integer"),
    ("mail:1.5", "integer"),
    ("mail:0", ">= 1"),
    ("mail:-2", ">= 1"),
    (":3", "queue name"),
    ("a{b}", "queue name"),
    ("a b", "queue name"),
])
def test_parse_queues_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_queues(spec)


def test_strict_order_is_by_weight_every_time():
    config = WorkerConfig(queues={"low": 1, "high": 5, "mid": 3}, strict_priority=True)
    rng = random.Random(0)
    assert {tuple(config.queue_order(rng)) for _ in range(50)} == {("high", "mid", "low")}


def test_single_queue_order():
    assert WorkerConfig(queues={"only": 4}).queue_order() == ["only"]


def test_weighted_order_follows_the_weights():
    config = WorkerConfig(queues={"light": 1, "heavy": 9})
    rng = random.Random(12345)
    orders = [config.queue_order(rng) for _ in range(2000)]
    assert all(sorted(order) == ["heavy", "light"] for order in orders)
    heavy_first = sum(order[0] == "heavy" for order in orders) / len(orders)
    assert 0.85 <= heavy_first <= 0.95


def test_weighted_order_gives_every_queue_a_turn_first():
    config = WorkerConfig(queues={"a": 1, "b": 2, "c": 3})
    rng = random.Random(7)
    firsts = [config.queue_order(rng)[0] for _ in range(3000)]
    share = {q: firsts.count(q) / len(firsts) for q in "abc"}
    for queue, weight in (("a", 1), ("b", 2), ("c", 3)):
        assert abs(share[queue] - weight / 6) < 0.05, share


def test_equal_weights_are_fair():
    config = WorkerConfig(queues={"x": 1, "y": 1})
    rng = random.Random(3)
    x_first = sum(config.queue_order(rng)[0] == "x" for _ in range(2000)) / 2000
    assert 0.45 <= x_first <= 0.55


def test_lease_and_dead_age_in_ms():
    config = WorkerConfig(queues={"default": 1}, lease_seconds=2.5, dead_max_age=60)
    assert (config.lease_ms, config.dead_max_age_ms) == (2500, 60_000)
