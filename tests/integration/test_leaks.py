"""The leak checks of ``tests/conftest.py`` (``tests/leaks.py``) see what they look at: a request
through the app gives them log lines and metric label values to read, each kind of leak they look
for is found where it is planted, and a database in a folder made before the test (a module-scoped
fixture's) is read again after each test that writes to it, blaming the test that put a leak there."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests import leaks
from tests.integration import soap as s
from tests.integration.soap import SoapClient

PLANTED = {
    "personal identity number": "19121212-1212",
    "HSA id": "SE2321000016-1003",
    "certificate id (uuid)": "0b9a2c64-4f1e-4c2b-8a7d-1e2f3a4b5c6d",
    "certificate id (test)": "cert-42",
    "document text": "Arbetsplatsolycka",
}


def test_a_request_through_the_app_gives_the_checks_log_lines_and_labels_to_read(
    soap: SoapClient, nothing_leaks: list[str]
) -> None:
    soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope("leaks-1", "191212121212"))

    assert any(value.startswith("RegisterCertificate") for value in leaks.label_values())
    assert nothing_leaks, "the request logged nothing to check"
    assert not leaks.in_log(nothing_leaks)


def test_every_kind_of_leak_is_found_where_it_is_planted(tmp_path: Path) -> None:
    assert sorted(PLANTED) == sorted(leaks.FORBIDDEN)
    for what, value in PLANTED.items():
        [found] = leaks.in_log([json.dumps({"message": f"about {value}"})])
        assert found.startswith(what)
        [found] = leaks.in_labels({value, "RegisterCertificate:3"})
        assert found.startswith(what)

    path = tmp_path / "planted.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (v TEXT)")
        connection.execute("INSERT INTO t VALUES ('191212121212'), ('Klämskada skuldra')")
    in_file = leaks.in_sqlite_files(tmp_path)
    assert [line.split(": ", 1)[1] for line in in_file] == [
        "a personal identity number",
        "document text ['Klämskada skuldra']",
    ]
    path.unlink()  # not left for the check after this test


def test_a_database_written_in_a_folder_a_wider_fixture_made_is_read_after_each_test(tmp_path: Path) -> None:
    # tmp_path stands in for pytest's base temporary directory; "module0" for a module-scoped fixture's
    # folder, made before the test, with a real server's database a level down.
    files = leaks.Files(tmp_path)
    database = tmp_path / "module0" / "data" / "intyg.db"
    database.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("CREATE TABLE t (v TEXT)")
    files.start()
    assert files.leaks() == []

    files.start()
    made = (tmp_path / "module0").stat().st_mtime_ns
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("INSERT INTO t VALUES ('191212121212')")
    assert (tmp_path / "module0").stat().st_mtime_ns == made, "the folder's own time shows nothing"
    assert files.leaks() == [f"{database}: a personal identity number"]

    files.start()
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("INSERT INTO t VALUES ('clean')")
    assert files.leaks() == [], "the next test to write there is not blamed for what it found"
    database.unlink()  # not left for the check after this test


def test_a_request_id_holding_twelve_digits_in_a_row_is_no_identity_number() -> None:
    # Seen in a run: a request id (32 random hex digits) held "204791969407".
    line = json.dumps({"message": "request", "request_id": "de204791969407cc1126dc9c8073ed51"})
    assert leaks.in_log([line]) == []


@pytest.mark.parametrize("clean", ["191212121213", "20260101123456", "SE2321000016-H489"])
def test_what_merely_looks_like_an_identity_number_is_not_one(clean: str) -> None:
    assert not leaks.valid_pins_in(clean.encode())
