"""What no log line, metric label value or database file may hold (DOMAIN.md's privacy; README
"Security"): a personal identity number, a certificate id, an HSA person id or document text.

``tests/conftest.py`` looks, after every test, at what that test produced: the log records emitted
while it ran, the metric label values that appeared, and the SQLite files written under pytest's
temporary directory (``Files``: the test's own folders and those of module- and session-scoped fixtures
alike). A leak is an error at the teardown of the test that caused it, in any order of the tests. The
suite's own requests are the probe: they use real identity numbers, certificate ids and
the peer certificates' text. ``tests/integration/test_leaks.py`` shows the checks see what they look at.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from stat import S_ISREG

from prometheus_client import REGISTRY

from service import errors
from service.model import PersonId

# 12 digits as a personnummer or samordningsnummer (with or without the dash), not within a longer run
# of letters and digits (a request id, 32 random hex digits, may hold twelve digits in a row); an HSA
# id of a person as the tests use them, a UUID (the peer requests' certificate ids), the tests'
# certificate ids.
FORBIDDEN = {
    "personal identity number": re.compile(r"(?<![0-9A-Za-z])(?:19|20)\d{6}-?\d{4}(?![0-9A-Za-z])"),
    "HSA id": re.compile(r"SE\d{10}-[0-9A-Z]{4}"),
    "certificate id (uuid)": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "certificate id (test)": re.compile(r"\b(?:cert|c|bench|x|p)-[\w-]+"),
    "document text": re.compile(r"Arbetsplatsolycka|Skada på multipla|Olivia|Klockarevägen"),
}

# Text only the certificates' documents hold: the patient's name and address, and answers.
DOCUMENT_TEXT = (
    "Olivia",
    "Pgatan 2",
    "Klockarevägen",
    "Arbetsplatsolycka",
    "Skada på multipla",
    "Klämskada skuldra",
    "Haltar när han dansar",
)
# 12 digits as a PIN is written, with or without its separator; checked to be a valid number, so that
# an id or a timestamp that merely looks like one is not counted. "Not after a letter or digit" is
# asserted after the first digit, not before it: a pattern that begins with a literal is searched for
# that literal first, eight times as fast through a database file, which is mostly zeros.
PIN_LIKE = re.compile(rb"((?:1(?<![0-9A-Za-z]1)9|2(?<![0-9A-Za-z]2)0)\d{6})[-+]?(\d{4})(?![0-9A-Za-z])")


def label_values() -> set[str]:
    return {
        value
        for family in REGISTRY.collect()
        for sample in family.samples
        for value in sample.labels.values()
    }


def in_labels(values: set[str]) -> list[str]:
    """One line per kind of leak among these label values."""
    found = []
    for what, pattern in FORBIDDEN.items():
        held = sorted(v for v in values if pattern.search(v))
        if held:
            found.append(f"{what} in metric labels: {held[:5]}")
    return found


def in_log(lines: list[str]) -> list[str]:
    """One line per kind of leak among these formatted log lines."""
    found = []
    for what, pattern in FORBIDDEN.items():
        held = [line for line in lines if pattern.search(line)]
        if held:
            found.append(f"{what} in {len(held)} log lines, e.g. {held[0][:300]}")
    return found


def valid_pins_in(data: bytes) -> set[str]:
    found = set()
    for match in PIN_LIKE.finditer(data):
        candidate = (match.group(1) + match.group(2)).decode("ascii")
        try:
            found.add(PersonId.parse(candidate).value)
        except errors.InvalidPersonId:
            continue
    return found


def sqlite_files(folder: Path) -> list[Path]:
    """SQLite databases under ``folder`` and the WAL and rollback journals beside them."""
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.name.endswith(("-wal", "-journal")):
            found.append(path)
            continue
        # A running service's journal may go between the listing and the reading: nothing left to read.
        with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
            if file.read(16) == b"SQLite format 3\x00":
                found.append(path)
    return found


def held_in(path: Path) -> tuple[set[str], list[str]]:
    """The valid identity numbers and the document texts a file holds, read byte for byte, free pages
    included (nothing where the file has gone)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set(), []
    return valid_pins_in(data), [text for text in DOCUMENT_TEXT if text.encode("utf-8") in data]


def described(path: Path, pins: set[str], texts: list[str]) -> list[str]:
    """One line per kind of leak: never the identity numbers themselves."""
    lines = []
    if pins:
        lines.append(f"{path}: a personal identity number")
    if texts:
        lines.append(f"{path}: document text {texts}")
    return lines


def in_sqlite_files(folder: Path) -> list[str]:
    """Every SQLite file under ``folder`` read byte for byte, free pages included."""
    return [line for path in sqlite_files(folder) for line in described(path, *held_in(path))]


def _folders(base: Path) -> dict[str, int]:
    """The folders directly under pytest's base temporary directory, each with its modification time
    (which changes as a file in it is made or removed: a database's WAL or journal)."""
    with os.scandir(base) as entries:
        return {e.name: e.stat().st_mtime_ns for e in entries if e.is_dir(follow_symlinks=False)}


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``, with its modification time and size."""
    found = {}
    for path in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # a journal may go while it is listed
            stat = path.stat()
            if S_ISREG(stat.st_mode):
                found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


class Files:
    """The SQLite files under pytest's base temporary directory ``base`` that changed during a test.

    A test's own folders (``tmp_path``, a fresh database's) are made during the test, so that a
    folder's own modification time shows them new or changed: cheap to look at for the thousands of
    folders a run leaves. A folder of a module- or session-scoped fixture (a real server's working
    directory and database, a shared app's database) is made before the tests that use it, and a test
    can write into its database without making or removing a file in it (a WAL written in place, or a
    file in a subfolder): its files themselves are compared after every test."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._folders: dict[str, int] = {}
        self._wide: dict[str, dict[str, tuple[int, int]]] = {}
        # What each file held when last read: a leak into a database that later tests write to as well
        # is the fault of the test that put it there, not theirs.
        self._held: dict[Path, tuple[set[str], list[str]]] = {}

    def start(self) -> None:
        """At a test's start. Folders made since the last test ended are the wider fixtures' this
        test set up first (pytest sets up wider scopes first, and ``nothing_leaks`` is the first of a
        test's own fixtures); from now on every file in them is compared."""
        for name in _folders(self.base).keys() - self._folders.keys():
            self._wide.setdefault(name, {})

    def leaks(self) -> list[str]:
        """At a test's end: what the SQLite files in every folder made or changed since the last call
        hold that they did not hold then."""
        changed = set()
        folders = _folders(self.base)
        for name, modified in folders.items():
            if self._folders.get(name) != modified:
                changed.add(name)
        self._folders = folders
        for name, before in self._wide.items():
            now = _files(self.base / name)
            if now != before:
                changed.add(name)
                self._wide[name] = now
        found = []
        for name in sorted(changed):
            for path in sqlite_files(self.base / name):
                pins, texts = held_in(path)
                pins_before, texts_before = self._held.get(path, (set(), []))
                found += described(path, pins - pins_before, [t for t in texts if t not in texts_before])
                self._held[path] = pins, texts
        return found
