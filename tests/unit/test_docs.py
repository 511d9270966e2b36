"""The documentation against the code.

docs/quickstart.md runs as written: its settings are checked and installed, its app files
are written and imported, its shell sessions run as doctests, `runbackground` starts for
real (a worker with the quickstart's settings and app) and its log lines must appear. The
reference pages must list exactly what the code has: BGTASKS keys and defaults, system
check ids, command options, signals, TaskInfo fields and task options. Every BGTASKS
example anywhere in docs/ must pass the system checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import doctest
import importlib
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from django.core.management import call_command, get_commands, load_command_class
from django.dispatch import Signal
from django.test import RequestFactory, override_settings
from django.urls import resolve

from django_bgtasks import BackgroundTask, TaskInfo, signals
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.connection import describe_target
from django_bgtasks.checks import check_settings
from django_bgtasks.conf import DEFAULTS
from helpers import REPO_ROOT, wait_until

DOCS = REPO_ROOT / "docs"
QUICKSTART = DOCS / "quickstart.md"
UNFINISHED = ("pending", "active", "scheduled", "retry")
# Options every management command has; a page may mention them or not.
DJANGO_OPTIONS = {"-h", "--help", "--version", "-v", "--verbosity", "--settings",
                  "--pythonpath", "--traceback", "--no-color", "--force-color", "--skip-checks"}


# -- reading the pages --------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language tag, text and first line in the file."""

    lang: str
    text: str
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


FENCE = re.compile(r"^(`{3,})(\S*)")


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a MyST page, MyST directives (```{note}) excluded."""
    blocks, lines = [], path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        fence, lang = match.groups()
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != fence:
            end += 1
        if not lang.startswith("{"):
            blocks.append(Block(lang, "\n".join(lines[index + 1:end]) + "\n", path, index + 2))
        index = end + 1
    return blocks


def sections(path: Path) -> dict[str, list[str]]:
    """Heading text (backticks removed) -> the lines under it, up to the next heading."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in path.read_text().splitlines():
        heading = re.match(r"^#{1,6} (.+)$", line)
        if heading:
            current = found.setdefault(heading.group(1).replace("`", "").strip(), [])
        else:
            current.append(line)
    return found


def table_rows(lines: list[str]) -> list[list[str]]:
    """The body rows of the Markdown tables in ``lines``, as lists of cells."""
    rows = []
    for line in lines:
        if not line.startswith("|") or re.match(r"^\|[\s:|-]+\|$", line):
            continue
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return [row for row in rows if row[0].startswith("`")]  # header rows are plain words


def first_code(cell: str) -> str:
    """The first `...` of a table cell."""
    match = re.search(r"`([^`]+)`", cell)
    assert match, f"no `code` in table cell {cell!r}"
    return match.group(1)


# -- the quickstart, run -------------------------------------------------------------------


VARIABLE = re.compile(r"(?P<worker>[\w.-]+:\d+:[0-9a-f]{6})|(?P<id>[0-9a-f]{32})"
                      r"|(?P<float>\d+\.\d+)|(?P<int>\d+)")
VARIABLE_PATTERNS = {"worker": r"\S+:\d+:[0-9a-f]{6}", "id": r"[0-9a-f]{32}",
                     "float": r"\d+\.\d+", "int": r"\d+"}


def log_pattern(line: str) -> re.Pattern[str]:
    """A doc's example log line as a regex: worker ids, task ids and numbers may differ."""
    parts, last = [], 0
    for match in VARIABLE.finditer(line):
        parts += [re.escape(line[last:match.start()]), VARIABLE_PATTERNS[match.lastgroup]]
        last = match.end()
    parts.append(re.escape(line[last:]))
    return re.compile("".join(parts))


class Quickstart:
    """Runs the quickstart's blocks in order, as a reader would, against the test Redis."""

    def __init__(self, tmp_path: Path, settings: Any, run_worker: Any, redis_url: str) -> None:
        self.root = tmp_path / "project"
        self.mail_dir = tmp_path / "mail"
        self.root.mkdir()
        self.settings = settings
        self.run_worker = run_worker
        self.redis_url = redis_url
        self.doc_settings: dict[str, Any] = {}
        self.globs: dict[str, Any] = {}  # the `manage.py shell` session, across blocks
        self.worker: Any = None
        self.ran: list[str] = []

    def run(self, block: Block) -> None:
        handler = {"console": self.console, "python": self.python, "pycon": self.pycon,
                   "text": self.log_lines}.get(block.lang)
        assert handler, f"{block.where}: no test runs a ```{block.lang} block"
        handler(block)
        self.ran.append(block.lang)

    # console --------------------------------------------------------------------------

    def console(self, block: Block) -> None:
        for line in block.text.splitlines():
            assert line.startswith("$ "), f"{block.where}: a console line without '$ ': {line}"
            argv = shlex.split(line[2:])
            if argv[:2] == ["pip", "install"]:
                self.pip_install(argv[2:], block)
            elif argv[:2] == ["python", "manage.py"] and len(argv) > 2:
                self.manage(argv[2], argv[3:], block)
            else:
                raise AssertionError(f"{block.where}: no test runs {line!r}")

    def pip_install(self, specs: list[str], block: Block) -> None:
        for spec in specs:
            name, _, extras = spec.partition("[")
            meta = metadata.metadata(name)  # PackageNotFoundError: the page names another
            assert meta["Name"] == name, f"{block.where}: installs {name}, not {meta['Name']}"
            for extra in filter(None, extras.rstrip("]").split(",")):
                assert extra in (meta.get_all("Provides-Extra") or []), f"{block.where}: {spec}"

    def manage(self, name: str, args: list[str], block: Block) -> None:
        if name == "runbackground":
            self.start_worker(args)
        elif name == "bgtasks":
            call_command("bgtasks", *args, stdout=io.StringIO())  # for real: read-only
        else:
            app = get_commands().get(name)
            assert app, f"{block.where}: there is no `manage.py {name}`"
            load_command_class(app, name).create_parser("manage.py", name).parse_args(args)

    def start_worker(self, args: list[str]) -> None:
        assert self.doc_settings, "the page starts the worker before it configures anything"
        apps, bgtasks = self.doc_settings["INSTALLED_APPS"], self.doc_settings["BGTASKS"]
        (self.root / "quickstart_settings.py").write_text(
            "from testproject.settings import *  # noqa: F403\n\n"
            f"INSTALLED_APPS += [app for app in {apps!r} if app not in INSTALLED_APPS]\n"
            # the testproject's demo app is installed too: its tasks name its limits
            f"BGTASKS = {{**{bgtasks!r}, 'REDIS_URL': REDIS_URL, "
            f"'LIMITS': BGTASKS['LIMITS']}}\n"
            "EMAIL_BACKEND = 'django.core.mail.backends.filebased.EmailBackend'\n"
            f"EMAIL_FILE_PATH = {str(self.mail_dir)!r}\n")
        self.worker = self.run_worker(*args, env={
            "DJANGO_SETTINGS_MODULE": "quickstart_settings", "PYTHONPATH": str(self.root)})

    # python files ---------------------------------------------------------------------

    def python(self, block: Block) -> None:
        first = block.text.splitlines()[0]
        assert first.startswith("# "), f"{block.where}: a python block names its file first"
        filename = first[2:].strip()
        if filename == "settings.py":
            self.use_settings(block)
        elif filename == "urls.py":
            urls = ModuleType("quickstart_urls")
            exec(compile(block.text, block.where, "exec"), urls.__dict__)
            match = resolve("/admin/django_bgtasks/task/", urlconf=urls)
            assert match.url_name == "django_bgtasks_task_changelist"
        elif re.fullmatch(r"myapp/\w+\.py", filename):
            self.app_module(filename, block)
        else:
            raise AssertionError(f"{block.where}: no test runs a block for {filename}")

    def use_settings(self, block: Block) -> None:
        namespace: dict[str, Any] = {}
        exec(compile(block.text, block.where, "exec"), namespace)
        assert "django_bgtasks" in namespace["INSTALLED_APPS"]
        with override_settings(BGTASKS=namespace["BGTASKS"]):
            assert check_settings() == [], f"{block.where}: BGTASKS fails the system checks"
        self.doc_settings = namespace
        # The page's settings, on the test Redis (the one thing a test cannot take as is).
        self.settings.BGTASKS = {**namespace["BGTASKS"], "REDIS_URL": self.redis_url}

    def app_module(self, filename: str, block: Block) -> None:
        package = self.root / "myapp"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").touch()
        (self.root / filename).write_text(block.text)
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        module = importlib.import_module(f"myapp.{Path(filename).stem}")
        if module.__name__ == "myapp.views":
            request = RequestFactory().post("/welcome/", {"email": "grace@example.com",
                                                          "name": "Grace"})
            response = module.welcome(request)
            assert response.status_code == 202, response.content
            assert get_broker().read_task(json.loads(response.content)["task"])

    # shell sessions and the worker's log ----------------------------------------------

    def pycon(self, block: Block) -> None:
        if self.worker is not None:
            self.wait_until_drained()
        test = doctest.DocTestParser().get_doctest(
            block.text, self.globs, block.where, str(block.path), block.line - 1)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        report: list[str] = []
        runner.run(test, out=report.append, clear_globs=False)
        self.globs.update(test.globs)  # DocTest ran on a copy: keep the session's names
        assert test.examples and not runner.failures, "".join(report)

    def wait_for_worker(self, predicate: Any, what: str) -> None:
        """Poll ``predicate`` while the worker runs; fail at once if it exited."""
        def check() -> Any:
            if self.worker.returncode is not None:
                raise AssertionError(f"the worker exited ({self.worker.returncode}) before "
                                     f"{what}; its log:\n{self.worker.log_text()[-3000:]}")
            return predicate()

        wait_until(check, timeout=30, message=f"{what}; the worker's log:\n"
                                              f"{self.worker.log_text()[-3000:]}")

    def wait_until_drained(self) -> None:
        broker = get_broker()

        def drained() -> bool:
            return not any(broker.counts(queue)[state] for queue in broker.known_queues()
                           for state in UNFINISHED)

        self.wait_for_worker(drained, "the worker ran every task")

    def log_lines(self, block: Block) -> None:
        assert self.worker is not None, f"{block.where}: log lines before the worker starts"
        doc_target = describe_target(self.doc_settings["BGTASKS"]["REDIS_URL"])
        for line in block.text.splitlines():
            pattern = log_pattern(line.replace(doc_target, describe_target(self.redis_url)))
            self.wait_for_worker(lambda p=pattern: p.search(self.worker.log_text()),
                                 f"{block.where}: the worker logs a line like {line!r}")


def test_the_quickstart_runs_as_written(tmp_path, settings, run_worker, redis_server):
    page = Quickstart(tmp_path, settings, run_worker, redis_server.url)
    try:
        for block in code_blocks(QUICKSTART):
            page.run(block)
    finally:
        sys.path[:] = [p for p in sys.path if p != str(page.root)]
        for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
            del sys.modules[name]
    # Every kind of block was there, and the worker really sent the page's mails.
    assert {"console", "python", "pycon", "text"} <= set(page.ran)
    mails = "".join(p.read_text() for p in page.mail_dir.iterdir())
    assert "To: ada@example.com" in mails and "To: grace@example.com" in mails


def test_log_pattern_matches_only_the_same_shape():
    pattern = log_pattern("task a.b[4c0f6b2d9e8a4f1b8d7c6a5e4f3b2a19] succeeded in 0.012s "
                          "(attempt 1)")
    assert pattern.search(f"INFO task a.b[{'0' * 32}] succeeded in 1.500s (attempt 3)")
    assert not pattern.search(f"INFO task a.b[{'0' * 32}] failed in 1.500s (attempt 3)")


# -- the reference pages, against the code -------------------------------------------------


def test_the_settings_table_has_every_key_and_its_default():
    rows = table_rows(sections(DOCS / "settings.md")["Settings"])
    documented = {first_code(row[0]): eval(first_code(row[2])) for row in rows}
    assert documented == DEFAULTS


def test_every_system_check_id_is_documented():
    in_code = {found for path in (REPO_ROOT / "django_bgtasks").rglob("*.py")
               for found in re.findall(r'id="(bgtasks\.[EW]\d{3})"', path.read_text())}
    assert len(in_code) >= 13
    rows = table_rows(sections(DOCS / "settings.md")["System checks"])
    assert {first_code(row[0]) for row in rows} == in_code


def parser_arguments(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings and positional metavars, without the ones every command has."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            found.update(action.option_strings)
        else:
            found.add(action.metavar or action.dest)
    return found - DJANGO_OPTIONS


def documented_arguments(lines: list[str]) -> set[str]:
    found = set()
    for row in table_rows(lines):
        code = " ".join(re.findall(r"`([^`]+)`", row[0]))
        if code.startswith("-"):
            found.update(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", code))
        else:
            found.add(code)
    return found - DJANGO_OPTIONS


def command_parser(name: str) -> argparse.ArgumentParser:
    return load_command_class("django_bgtasks", name).create_parser("manage.py", name)


def test_the_runbackground_options_are_the_parsers():
    page = sections(DOCS / "commands.md")
    assert documented_arguments(page["runbackground"]) == parser_arguments(
        command_parser("runbackground"))


def test_the_bgtasks_subcommands_and_options_are_the_parsers():
    page = sections(DOCS / "commands.md")
    parser = command_parser("bgtasks")
    subcommands = next(a for a in parser._actions
                       if isinstance(a, argparse._SubParsersAction)).choices
    documented = {title.split()[1] for title in page if re.fullmatch(r"bgtasks \w+", title)}
    assert documented == set(subcommands)
    for name, subparser in subcommands.items():
        assert documented_arguments(page[f"bgtasks {name}"]) == parser_arguments(subparser), name


def test_every_signal_is_documented():
    names = {name for name, value in vars(signals).items() if isinstance(value, Signal)}
    text = (DOCS / "api.md").read_text()
    assert set(re.findall(r"^\.\. py:data:: (\w+)", text, re.M)) == names


def test_the_task_info_table_has_every_field():
    rows = table_rows(sections(DOCS / "api.md")["TaskInfo fields"])
    assert {first_code(row[0]) for row in rows} == {f.name for f in dataclasses.fields(TaskInfo)}


def test_the_task_options_table_has_every_option():
    options = {f.name for f in dataclasses.fields(BackgroundTask)} - {"func", "name"}
    rows = table_rows(sections(DOCS / "tasks.md")["Options"])
    assert {first_code(row[0]) for row in rows} == options


def test_every_bgtasks_example_passes_the_system_checks():
    examples = [block for page in sorted(DOCS.glob("*.md")) for block in code_blocks(page)
                if block.lang == "python" and "BGTASKS = {" in block.text]
    assert len(examples) >= 3
    for block in examples:
        namespace: dict[str, Any] = {}
        exec(compile(block.text, block.where, "exec"), namespace)
        caches = namespace.get("CACHES", {})
        with override_settings(BGTASKS=namespace["BGTASKS"], **({"CACHES": caches} if caches
                                                                 else {})):
            problems = check_settings()
        assert problems == [], f"{block.where}: {problems}"


def test_every_image_a_page_shows_exists_and_every_screenshot_is_shown():
    shown = {match for page in DOCS.glob("*.md")
             for match in re.findall(r"^```\{image\} (\S+)$", page.read_text(), re.M)}
    assert shown, "no page shows an image"
    assert [path for path in shown if not (DOCS / path).is_file()] == []
    # The browser test writes these; one that no page shows is a stale file.
    screenshots = {f"_static/screenshots/{p.name}"
                   for p in (DOCS / "_static" / "screenshots").glob("*.png")}
    assert screenshots <= shown



def sentences(path: Path) -> list[str]:
    """The page's prose (code blocks left out) as sentences, on one line each."""
    prose = "\n".join(line for line in path.read_text().splitlines()
                      if not line.startswith("    "))
    prose = re.sub(r"^(`{3,}).*?^\1\s*$", "", prose, flags=re.M | re.S)
    return re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", prose.replace("**", "")))


TOPOLOGY = r"\b(sentinel|cluster)\b"
NO_SUPPORT = re.compile(rf"\b(no|not|nor|without)\b.{{0,40}}\bsupport.{{0,40}}{TOPOLOGY}"
                        rf"|{TOPOLOGY}.{{0,40}}\b(is|are) (not|un)supported", re.I)


def test_no_page_says_cluster_or_sentinel_is_unsupported():
    # Redis Cluster and Sentinel are supported (broker/connection.py, docs/production.md);
    # two pages once said otherwise.
    claims = [f"{page.name}: {sentence}" for page in sorted(DOCS.glob("*.md"))
              for sentence in sentences(page) if NO_SUPPORT.search(sentence)]
    assert claims == []
    not_done = " ".join(sections(DOCS / "comparison.md")["What django-bgtasks does not do"])
    for item in re.findall(r"^- (.+?)(?=^- |\Z)", not_done.replace(" - ", "\n- "), re.M | re.S):
        assert not re.search(TOPOLOGY, item, re.I) or "are supported" in item, item


def test_no_page_sends_the_reader_to_notes_they_do_not_have():
    # The project's own design sketch and research notes are not published.
    lacking = re.compile(r"starting design|research notes|DESIGN\.md|\.\./shared/", re.I)
    assert [f"{page.name}: {sentence}" for page in sorted(DOCS.glob("*.md"))
            for sentence in sentences(page) if lacking.search(sentence)] == []
