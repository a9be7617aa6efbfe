"""Fixtures for tests through the real store and the app: a fresh database per test, on SQLite and,
where INTYG_TEST_POSTGRES_URL names a server, on PostgreSQL too (the same tests, parametrised).

On PostgreSQL every test gets its own database, cloned from a template migrated once per session.
Without a server the PostgreSQL half is reported as skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.store import migration
from tests.integration.soap import SoapClient
from tests.keys import settings_keys

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


@contextmanager
def fresh_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[str]:
    """The URL of a new, migrated database on ``engine`` ("sqlite" or "postgres"), dropped after."""
    if engine == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'intyg.db'}"
        migration.upgrade(url)
        yield url
        return
    template = request.getfixturevalue("postgres_template")
    assert POSTGRES_URL is not None
    name = f"intyg_test_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield _with_database(POSTGRES_URL, name)
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
        # clear, as 0002 stored them); tests/zz_suite reads every database the suite leaves behind.
        for leftover in path.parent.glob("empty.db*"):
            leftover.unlink()
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: INTYG_TEST_POSTGRES_URL is not set")
    name = f"intyg_empty_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    yield _with_database(POSTGRES_URL, name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The audit log's development signing key lives in the test's own folder, not the working directory.
    return Settings(
        database_url=database_url, dev_audit_key_file=tmp_path / "dev-audit-key.pem", **settings_keys()
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def soap(client: TestClient) -> SoapClient:
    return SoapClient(client)
