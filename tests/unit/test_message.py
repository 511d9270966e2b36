"""TaskMessage: the JSON codec between enqueue and the worker."""

from __future__ import annotations

import json

import pytest

from django_bgtasks.exceptions import InvalidTaskMessage
from django_bgtasks.message import MESSAGE_VERSION, TaskMessage, shorten_raw


def make(**overrides) -> TaskMessage:
    values = dict(
        id="abc", name="app.tasks.send", queue="mail", args=[1, "two", [3], {"four": 4}],
        kwargs={"subject": "hé", "flags": {"a": None, "b": True}}, priority=-7,
        max_retries=5, timeout=90.5, result_ttl=3600.0, unique_key="app.tasks.send:ff",
        enqueued_at=1_700_000_000.25, run_after=1_700_000_060.5,
    )
    values.update(overrides)
    return TaskMessage(**values)


def valid_dict() -> dict:
    return json.loads(make().encode())


@pytest.mark.parametrize("msg", [make(), make(result_ttl=None, unique_key=None, run_after=None,
                                              args=[], kwargs={})])
def test_round_trip(msg):
    encoded = msg.encode()
    assert isinstance(encoded, str)
    assert TaskMessage.decode(encoded) == msg
    assert TaskMessage.decode(encoded.encode()) == msg  # bytes, as read from Redis


def test_encoding_is_compact_json_with_a_version():
    encoded = make().encode()
    data = json.loads(encoded)
    assert data["v"] == MESSAGE_VERSION
    assert data["kwargs"]["subject"] == "hé"
    assert ", " not in encoded and ": " not in encoded


def test_encode_refuses_nan():
    with pytest.raises(ValueError):
        make(args=[float("nan")]).encode()


def test_decode_ignores_unknown_fields_and_fills_optional_ones():
    data = valid_dict()
    for key in ("result_ttl", "unique_key", "enqueued_at", "run_after", "v"):
        del data[key]
    data["added_in_a_later_version"] = 1
    msg = TaskMessage.decode(json.dumps(data))
    assert (msg.result_ttl, msg.unique_key, msg.enqueued_at, msg.run_after) == (
        None, None, 0.0, None)
    assert msg.args == make().args


@pytest.mark.parametrize("raw,expected", [
    (None, "missing"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"\x80\x81 not utf-8", "not JSON"),
    (b"{not json", "not JSON"),
    ("", "not JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'"a string"', "not a JSON object"),
    (b"42", "not a JSON object"),
    (b"null", "not a JSON object"),
])
def test_decode_errors_are_readable(raw, expected):
    with pytest.raises(InvalidTaskMessage) as caught:
        TaskMessage.decode(raw)
    assert expected in str(caught.value)
    assert "Traceback" not in str(caught.value)


@pytest.mark.parametrize("field", ["id", "name", "queue", "args", "kwargs", "priority",
                                   "max_retries", "timeout"])
def test_decode_missing_field(field):
    data = valid_dict()
    del data[field]
    with pytest.raises(InvalidTaskMessage, match=f"no valid '{field}'"):
        TaskMessage.decode(json.dumps(data))


@pytest.mark.parametrize("field,value", [
    ("id", 1), ("name", None), ("args", {"a": 1}), ("kwargs", [1]), ("priority", "1"),
    ("priority", True), ("max_retries", 1.5), ("timeout", "60"), ("timeout", False),
])
def test_decode_wrongly_typed_field(field, value):
    data = valid_dict()
    data[field] = value
    with pytest.raises(InvalidTaskMessage, match=f"no valid '{field}'"):
        TaskMessage.decode(json.dumps(data))


def test_decode_error_quotes_the_raw_data():
    with pytest.raises(InvalidTaskMessage) as caught:
        TaskMessage.decode(b'{"id": "x", "surprise": 1}')
    assert "surprise" in str(caught.value)


def test_decode_error_is_bounded_for_huge_data():
    raw = b"{" + b"x" * 100_000
    with pytest.raises(InvalidTaskMessage) as caught:
        TaskMessage.decode(raw)
    assert len(str(caught.value)) < 1_000


def test_shorten_raw():
    assert shorten_raw("short") == "'short'"
    assert shorten_raw(b"caf\xc3\xa9") == "'café'"
    assert shorten_raw(b"\xff\x00ok") == repr("\\xff\x00ok")
    long = shorten_raw("y" * 500, limit=50)
    assert long == repr("y" * 500)[:50] + "..."
    assert shorten_raw("y" * 48, limit=50) == repr("y" * 48)  # exactly at the limit: whole
