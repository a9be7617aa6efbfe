"""What a developer expects of a Python service of this kind, run as they would run it: ``python -m service``
is the ``intygstjanst`` command; the bare ``alembic`` command, run in the project's folder, migrates the
database the settings name with the keys they name (pyproject.toml's ``[tool.alembic]``,
``service/store/migrations/env.py``), as ``intygstjanst migrate`` does (``tests/integration/test_cli.py``);
and ``./dev`` says what it runs and how long each step and the whole took."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from service.store import migration
from service.store.tables import metadata
from tests.integration.test_cli import clean_environment, keys_in_environment, revision_in, tables_in
from tests.integration.test_store import _stored_before_0007

PROJECT = Path(__file__).resolve().parents[2]
ALEMBIC = Path(sys.executable).parent / "alembic"


def run(args: list[str], cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_dash_m_service_is_the_intygstjanst_command(tmp_path: Path) -> None:
    done = run([sys.executable, "-m", "service", "--help"], tmp_path)
    serve = run([sys.executable, "-m", "service", "serve", "--help"], tmp_path)

    assert done.returncode == 0, done.stderr
    for command in ("serve", "migrate", "dev-token", "verify-audit", "outbox"):
        assert command in done.stdout
    assert serve.returncode == 0, serve.stderr
    assert "--port" in serve.stdout and "--log-format" in serve.stdout


def test_the_bare_alembic_command_migrates_the_configured_database_to_head(tmp_path: Path) -> None:
    database = tmp_path / "bare.db"
    settings = {
        "INTYG_DATABASE_URL": f"sqlite:///{database}",
        # The development keys the settings name: those `intygstjanst migrate` would use.
        "INTYG_DEV_KEYS_FILE": str(tmp_path / "keys.json"),
    }

    upgraded = run([str(ALEMBIC), "upgrade", "head"], PROJECT, **settings)
    current = run([str(ALEMBIC), "current"], PROJECT, **settings)

    assert upgraded.returncode == 0, upgraded.stderr
    assert set(metadata.tables) <= tables_in(database)
    assert revision_in(database) == migration.head_revision()
    assert (tmp_path / "keys.json").is_file()
    assert current.returncode == 0, current.stderr
    assert f"{migration.head_revision()} (head)" in current.stdout


def test_the_bare_alembic_command_refuses_settings_it_cannot_use_in_one_line(tmp_path: Path) -> None:
    done = run(
        [str(ALEMBIC), "upgrade", "head"],
        PROJECT,
        INTYG_DATABASE_URL=f"sqlite:///{tmp_path / 'refused.db'}",
        INTYG_KEYS_FILE=str(tmp_path / "missing.json"),
    )

    said = done.stdout + done.stderr  # alembic says it on stdout
    assert done.returncode != 0
    assert "FAILED:" in said and "missing.json" in said
    assert "Traceback" not in said


def test_the_bare_alembic_command_converts_stored_rows_with_the_configured_keys_only(tmp_path: Path) -> None:
    """Migration 0007 reads the stored documents: the keys are the settings', as for `intygstjanst migrate`."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'stored.db'}"
    migration.upgrade(url)
    _stored_before_0007(url)
    # The production profile generates no keys: without configured ones there are none.
    without = run(
        [str(ALEMBIC), "upgrade", "head"], PROJECT, INTYG_DATABASE_URL=url, INTYG_PROFILE="production"
    )
    at_0006 = revision_in(tmp_path / "stored.db")

    with_keys = run(
        [str(ALEMBIC), "upgrade", "head"], PROJECT, INTYG_DATABASE_URL=url, **keys_in_environment()
    )

    said = without.stdout + without.stderr
    assert without.returncode != 0
    assert "FAILED: migration stopped: migration 0007" in said and "Traceback" not in said
    assert at_0006 == "0006"
    assert with_keys.returncode == 0, with_keys.stdout + with_keys.stderr
    assert revision_in(tmp_path / "stored.db") == migration.head_revision()


def fake_project(tmp_path: Path, *, ruff: int, mypy: int) -> Path:
    """``./dev`` in a folder of its own, its venv fresh: the interpreter running the tests, and a ruff
    and a mypy that exit with the given statuses."""
    project = tmp_path / "project"
    (project / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(PROJECT / "dev", project / "dev")
    for name in ("requirements.lock", "pyproject.toml"):
        (project / name).write_text("", encoding="utf-8")
    (project / ".venv" / "bin" / "python").symlink_to(sys.executable)
    for tool, status in (("ruff", ruff), ("mypy", mypy)):
        fake = project / ".venv" / "bin" / tool
        fake.write_text(f"#!/bin/sh\nexit {status}\n", encoding="utf-8")
        fake.chmod(0o755)
    stamp = project / ".venv" / ".dev-stamp"
    stamp.touch()
    os.utime(stamp, (stamp.stat().st_atime + 1, stamp.stat().st_mtime + 1))  # newer than the lock file
    return project


def test_dev_says_how_long_the_whole_took(tmp_path: Path) -> None:
    project = fake_project(tmp_path, ruff=0, mypy=0)

    done = run(["./dev", "venv"], project)

    assert done.returncode == 0, done.stderr
    assert "dev: --- .venv is up to date with requirements.lock" in done.stderr
    assert re.search(r"^dev: venv done in \d+\.\ds$", done.stderr, re.MULTILINE), done.stderr


def test_dev_test_says_what_each_step_runs_how_long_it_took_and_stops_at_the_first_failure(
    tmp_path: Path,
) -> None:
    project = fake_project(tmp_path, ruff=0, mypy=3)

    done = run(["./dev", "test"], project)

    assert done.returncode == 3
    lines = [line for line in done.stderr.splitlines() if line.startswith("dev: ")]
    shapes = [re.sub(r"\d+\.\ds", "T", line) for line in lines]
    assert shapes == [
        "dev: --- .venv is up to date with requirements.lock",
        "dev: --- ruff check: ruff check service tests",
        "dev: ruff check passed in T",
        "dev: --- ruff format: ruff format --check service tests",
        "dev: ruff format passed in T",
        "dev: --- mypy: mypy",
        "dev: mypy failed (exit 3) after T",
        "dev: test failed (exit 3) after T",
    ], done.stderr
