"""Sphinx configuration for the django-bgtasks documentation (`tox -e docs`)."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import django

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent

# autodoc imports django_bgtasks, whose modules need configured settings (models, admin,
# checks): testproject's settings do, and connect to nothing at import.
sys.path.insert(0, str(REPO / "testproject"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django.setup()

project = "django-bgtasks"
author = "the django-bgtasks developers"
copyright = "2026, the django-bgtasks developers"
release = metadata.version("django-bgtasks")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"django-bgtasks {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
