"""docs/testing.md runs as written: its ```python blocks, in order, as one module (named
shop.tasks, as the page's sample output says), then its pytest-style tests (with the
bgtasks_capture fixture's capture) and its TestCase classes; its sample failure message
is the one assert_enqueued() gives."""

from __future__ import annotations

import io
import re
import unittest
from typing import Any

import pytest

from django_bgtasks.testing import capture_tasks
from helpers import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "testing.md"
MODULE = "shop.tasks"


def blocks(lang: str) -> list[str]:
    """The page's fenced blocks of ``lang``, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```$", PAGE.read_text(), re.M | re.S)


@pytest.fixture
def page() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": MODULE}
    for number, code in enumerate(blocks("python"), 1):
        exec(compile(code, f"{PAGE.name} (python block {number})", "exec"), namespace)
    return namespace


def test_the_pytest_examples_pass(page):
    tests = [value for name, value in page.items() if name.startswith("test_")]
    assert len(tests) == 3
    for test in tests:
        with capture_tasks() as capture:
            test(bgtasks_capture=capture)


def test_the_unittest_examples_pass(page, django_db_setup, django_db_blocker):
    cases = [value for value in page.values() if isinstance(value, type)
             and issubclass(value, unittest.TestCase) and value.__module__ == MODULE]
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(case)
                               for case in cases)
    assert suite.countTestCases() == 3
    output = io.StringIO()
    with django_db_blocker.unblock():
        result = unittest.TextTestRunner(stream=output, verbosity=2).run(suite)
    assert result.wasSuccessful(), output.getvalue()


def test_the_sample_failure_message_is_the_real_one(page):
    [sample] = [text for text in blocks("text") if "AssertionError" in text]
    with capture_tasks() as capture:
        page["place_order"].enqueue(42)
        capture.run()
        with pytest.raises(AssertionError) as failure:
            capture.assert_enqueued(page["send_receipt"], 42, copy_to=["sales@example.com"])
    assert sample == f"AssertionError: {failure.value}\n"
