"""What no log line, metric label value or database file may hold (DOMAIN.md's privacy; README
"Security"): a personal identity number, a certificate id, an HSA person id or document text.

``tests/conftest.py`` looks, after every test, at what that test produced: the log records emitted
while it ran, the metric label values that appeared, and the SQLite files written under pytest's
temporary directory. A leak is an error at the teardown of the test that caused it, in any order of
the tests. The suite's own requests are the probe: they use real identity numbers, certificate ids and
the peer certificates' text. ``tests/integration/test_leaks.py`` shows the checks see what they look at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import REGISTRY

from service import errors
from service.model import PersonId

# 12 digits as a personnummer or samordningsnummer (with or without the dash), an HSA id of a person
# as the tests use them, a UUID (the peer requests' certificate ids), the tests' certificate ids.
FORBIDDEN = {
    "personal identity number": re.compile(r"(?<!\d)(?:19|20)\d{6}-?\d{4}(?!\d)"),
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
# an id or a timestamp that merely looks like one is not counted.
PIN_LIKE = re.compile(rb"(?<![0-9A-Za-z])((?:19|20)\d{6})[-+]?(\d{4})(?![0-9A-Za-z])")


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
        with path.open("rb") as file:
            if file.read(16) == b"SQLite format 3\x00":
                found.append(path)
    return found


def in_sqlite_files(folder: Path) -> list[str]:
    """Every SQLite file under ``folder`` read byte for byte, free pages included."""
    found = []
    for path in sqlite_files(folder):
        data = path.read_bytes()
        if valid_pins_in(data):
            found.append(f"{path}: a personal identity number")
        held = [text for text in DOCUMENT_TEXT if text.encode("utf-8") in data]
        if held:
            found.append(f"{path}: document text {held}")
    return found


def folders(base: Path) -> dict[str, int]:
    """The folders directly under pytest's base temporary directory, each with its modification time
    (which changes as a file in it is made or removed: a database's WAL or journal)."""
    with os.scandir(base) as entries:
        return {e.name: e.stat().st_mtime_ns for e in entries if e.is_dir(follow_symlinks=False)}
