"""The package's metadata against itself: README (PyPI's long description) links only to
absolute addresses that exist, and the version is one (``django_bgtasks.__version__``,
what setup.cfg reads, CHANGELOG's latest release). Building and installing the package is
``tox -e package`` (scripts/package-smoke), not this module."""

from __future__ import annotations

import ast
import configparser
import re
from datetime import date

import django_bgtasks
from helpers import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS_URL = "https://django-bgtasks.readthedocs.io/"
REPO_URL = "https://github.com/django-bgtasks/django-bgtasks"

# Markdown links and images [text](target "title"), reference definitions [id]: target,
# autolinks <target>, and HTML href/src attributes.
LINK_PATTERNS = (
    re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)"),
    re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE),
    re.compile(r"<([a-z][a-z0-9+.-]{1,31}:[^>\s]*)>", re.IGNORECASE),
    re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE),
)


def readme_links(text: str) -> list[str]:
    """Every link target in a Markdown text, outside code blocks and code spans."""
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1\s*$", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"(`+).+?\1", "", text, flags=re.DOTALL)
    return [match for pattern in LINK_PATTERNS for match in pattern.findall(text)]


def test_readme_links_are_absolute_and_point_at_what_exists() -> None:
    links = readme_links(README.read_text())
    assert links, "found no link in README.md: the link patterns are broken"
    relative = [link for link in links if not link.startswith("https://")]
    assert not relative, f"README.md is PyPI's page too: use absolute links, not {relative}"
    for link in links:
        if link.startswith(DOCS_URL) and link != DOCS_URL:
            page = link.removeprefix(f"{DOCS_URL}en/latest/").partition("#")[0]
            assert page.endswith(".html") and (
                REPO_ROOT / "docs" / page.replace(".html", ".md")).is_file(), (
                f"README links to {link}: not a page of docs/ "
                f"({DOCS_URL}en/latest/<page>.html)")
        elif link.startswith(REPO_URL + "/"):
            path = link.removeprefix(f"{REPO_URL}/blob/main/").partition("#")[0]
            assert link.startswith(f"{REPO_URL}/blob/main/") and (REPO_ROOT / path).exists(), (
                f"README links to {link}: not a file of this repository "
                f"({REPO_URL}/blob/main/<path>)")


def test_readme_link_finder_sees_relative_links() -> None:
    found = readme_links("[a](docs/design.md) ![b](img.png)\n[c]: ../x\n<http://y> "
                         '<a href="z.html">z</a> `[d](not/a/link)`\n```\n[e](f)\n```\n')
    assert found == ["docs/design.md", "img.png", "../x", "http://y", "z.html"]


def test_version_is_one_literal_that_setup_cfg_reads() -> None:
    # setuptools' attr: reads the assignment without importing the package (no Django at
    # build time), which it can only do for a literal.
    tree = ast.parse((REPO_ROOT / "django_bgtasks" / "__init__.py").read_text())
    literals = [node.value.value for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and any(getattr(t, "id", None) == "__version__" for t in node.targets)]
    assert literals == [django_bgtasks.__version__]
    assert re.fullmatch(r"\d+\.\d+\.\d+", django_bgtasks.__version__)
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: django_bgtasks.__version__"
    assert setup["metadata"]["long_description"] == "file: README.md"


def test_changelog_latest_release_is_the_version() -> None:
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\S+))?", text, flags=re.MULTILINE)
    assert headings and headings[0][0] == "Unreleased", "CHANGELOG.md starts with [Unreleased]"
    releases = headings[1:]
    assert releases, "CHANGELOG.md lists no release"
    version, released = releases[0]
    assert version == django_bgtasks.__version__, (
        f"CHANGELOG's latest release is {version}, the package's version "
        f"{django_bgtasks.__version__}")
    date.fromisoformat(released)
    # Keep a Changelog's link definitions, one per heading
    for name, _ in headings:
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, flags=re.MULTILINE), (
            f"CHANGELOG.md has no link definition for [{name}]")
