"""Fixtures for tests through the real store and the app: a fresh database per test, on SQLite and,
where INTYG_TEST_POSTGRES_URL names a server, on PostgreSQL too (the same tests, parametrised).

A test (or module, or class) marked ``one_engine("why")`` runs on SQLite only: the mark says that its
outcome cannot depend on the database, and why (the requests are refused before the store, say). Tests
whose outcome can differ by engine keep both: the store, the unit of work, concurrency and locking,
encryption at rest, the audit log, NUL bytes (PostgreSQL's text refuses them), column lengths
(PostgreSQL enforces them), SQL dialect paths, round trips, pools and timeouts.

Every test gets its own database, cloned from a template migrated once per session: on PostgreSQL
with ``CREATE DATABASE ... TEMPLATE`` (the next one made ahead, while a test runs, and each dropped after
its test in the background), on SQLite as a copy of the migrated file. The migrations
themselves are tested from an empty database (``empty_database_url``).
Without a server the PostgreSQL half is reported as skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.app import create_app
from service.config import Settings
from service.store import migration
from tests.integration.soap import SoapClient
from tests.keys import settings_keys
from tests.reference import business_rules_settings

POSTGRES_URL = os.environ.get("INTYG_TEST_POSTGRES_URL")
TEMPLATE = "intyg_test_template"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin(sql: str) -> None:
    import psycopg

    assert POSTGRES_URL is not None
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(sql)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip(
            "PostgreSQL: INTYG_TEST_POSTGRES_URL is not set (./dev test starts a server where one is installed)"
        )
    _admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    _admin(f"CREATE DATABASE {TEMPLATE}")
    migration.upgrade(_with_database(POSTGRES_URL, TEMPLATE))
    yield TEMPLATE
    _admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


class _Clones:
    """Databases cloned from the template: the next one is made while a test runs, and a used one
    dropped, by a thread of their own. CREATE DATABASE is a third of a PostgreSQL test's setup, and the
    server makes the copy on another core meanwhile."""

    def __init__(self, template: str) -> None:
        self._template = template
        self._thread = ThreadPoolExecutor(1)
        self._next = self._thread.submit(self._create)
        self._dropped: list[Future[None]] = []

    def _create(self) -> str:
        name = f"intyg_test_{uuid.uuid4().hex[:12]}"
        _admin(f"CREATE DATABASE {name} TEMPLATE {self._template}")
        return name

    def take(self) -> str:
        """A new database's name, made from the template and used by nothing yet."""
        name = self._next.result()
        self._next = self._thread.submit(self._create)
        return name

    def drop(self, name: str) -> None:
        self._dropped.append(self._thread.submit(_admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def close(self) -> None:
        """Drops the one made ahead; raises what any drop raised."""
        self.drop(self._next.result())
        self._thread.shutdown()
        for dropped in self._dropped:
            dropped.result()


@pytest.fixture(scope="session")
def postgres_clones(postgres_template: str) -> Iterator[_Clones]:
    clones = _Clones(postgres_template)
    yield clones
    clones.close()


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" not in metafunc.fixturenames:
        return
    one = metafunc.definition.get_closest_marker("one_engine")
    if one is not None and not (one.args and isinstance(one.args[0], str) and one.args[0].strip()):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: one_engine needs the reason as its argument")
    metafunc.parametrize("database_url", ["sqlite"] if one else ENGINES, indirect=True)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "intyg.db"
    migration.upgrade(f"sqlite+aiosqlite:///{path}")
    # Everything in the one file, so that a copy of it is the whole database.
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not [p for p in path.parent.iterdir() if p != path and p.stat().st_size], (
        "left beside the template"
    )
    return path


@contextmanager
def fresh_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[str]:
    """The URL of a new, migrated database on ``engine`` ("sqlite" or "postgres"), dropped after: a
    copy of the session's migrated template."""
    if engine == "sqlite":
        path = tmp_path_factory.mktemp("db") / "intyg.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    clones: _Clones = request.getfixturevalue("postgres_clones")
    assert POSTGRES_URL is not None
    name = clones.take()
    try:
        yield _with_database(POSTGRES_URL, name)
    finally:
        clones.drop(name)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Parametrised by ``pytest_generate_tests``: both engines, or SQLite alone under ``one_engine``."""
    with fresh_database(request, tmp_path_factory, request.param) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database without any schema, for tests of the migrations themselves."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "empty.db"
        yield f"sqlite+aiosqlite:///{path}"
        # A migration test may leave rows of before encryption at rest in it (identity numbers in the
        # clear, as 0002 stored them); tests/conftest.py reads every database a test leaves behind.
        for leftover in path.parent.glob("empty.db*"):
            leftover.unlink()
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: INTYG_TEST_POSTGRES_URL is not set")
    name = f"intyg_empty_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    yield _with_database(POSTGRES_URL, name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sync_url(url: str) -> str:
    """The test database's URL for a plain (synchronous) engine."""
    return url.replace("sqlite+aiosqlite://", "sqlite://", 1)


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """A plain engine on the test database, to look at and tamper with rows in SQL."""
    engine = sqlalchemy.create_engine(sync_url(database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The audit log's development signing key lives in the test's own folder, not the working directory.
    # Every certificate registered is checked against its type's rules where ../shared has them.
    return Settings(
        database_url=database_url,
        dev_audit_key_file=tmp_path / "dev-audit-key.pem",
        **settings_keys(),
        **business_rules_settings(),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def soap(client: TestClient) -> SoapClient:
    return SoapClient(client)
