"""The ``intygstjanst`` command as an operator runs it: the venv's console script, in a subprocess.

``migrate`` brings a fresh database to the newest schema; ``serve`` with no INTYG_ settings starts on
the embedded SQLite default in the working directory (README.md's one-command set-up) and is ready at
once. The commands themselves are in ``service/cli.py``; the schema is ``service/store/tables.py``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from queue import Empty, Queue
from typing import TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.store import migration
from service.store.crypto import KeyRing, encode_key
from service.store.tables import metadata
from tests.keys import KEYRING, settings_keys
from tests.server import free_port, wait_until
from tests.tls import make_pki

COMMAND = Path(sys.executable).parent / "intygstjanst"
TIMEOUT = 20.0  # generous for a loaded CI machine; a healthy start takes about a second
Key = TypeVar("Key")
Run = TypeVar("Run")


def clean_environment(**extra: str) -> dict[str, str]:
    """The test process's environment without any INTYG_ setting, plus ``extra``. The metrics port is a
    free one unless ``extra`` names it: another service on the machine may hold the default."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("INTYG_")}
    env["INTYG_METRICS_PORT"] = str(free_port())
    env.update(extra)
    return env


def tables_in(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def revision_in(path: Path) -> str | None:
    with sqlite3.connect(path) as connection:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def test_the_console_script_is_installed_in_the_venv() -> None:
    assert COMMAND.is_file() and os.access(COMMAND, os.X_OK), f"{COMMAND} missing: pip install -e ."


# --- migrate ------------------------------------------------------------------------------------------


def migrate(database: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), "migrate"],
        cwd=cwd,
        env=clean_environment(INTYG_DATABASE_URL=f"sqlite:///{database}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_creates_the_whole_schema_in_a_fresh_sqlite_database(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"

    done = migrate(database, tmp_path)

    assert done.returncode == 0, done.stderr
    assert "newest version" in done.stdout
    assert set(metadata.tables) | {"alembic_version"} <= tables_in(database)
    assert revision_in(database) == migration.head_revision()
    # The URL named the database: no default file appears in the working directory.
    assert not (tmp_path / "intygstjanst.db").exists()


def test_migrate_twice_is_a_no_op_the_second_time(tmp_path: Path) -> None:
    database = tmp_path / "again.db"
    assert migrate(database, tmp_path).returncode == 0

    again = migrate(database, tmp_path)

    assert again.returncode == 0, again.stderr
    assert revision_in(database) == migration.head_revision()


def test_migrate_refuses_a_database_url_it_cannot_serve(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(COMMAND), "migrate"],
        cwd=tmp_path,
        env=clean_environment(INTYG_DATABASE_URL="mysql://localhost/intyg"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0
    assert "database_url" in done.stderr
    assert "Traceback" not in done.stdout


# --- serve --------------------------------------------------------------------------------------------


class Server:
    """A running ``intygstjanst serve``: its output is read on a thread, line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: Queue[str] = Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not printed; output so far:\n{''.join(self.output)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        # The pipe ends once the process has exited; close it so no file is left open.
        self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, int, Path]]:
    port = free_port()
    process = subprocess.Popen(
        [str(COMMAND), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_environment(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Server(process)
    try:
        yield running, port, tmp_path
    finally:
        running.stop()


def test_serve_without_settings_listens_on_loopback_with_sqlite_in_the_working_directory(
    server: tuple[Server, int, Path],
) -> None:
    running, port, workdir = server

    line = running.wait_for("listening on", TIMEOUT)

    assert f"listening on http://127.0.0.1:{port}" in line
    assert (workdir / "intygstjanst.db").is_file()
    assert "intygstjanst.db" in line
    # The database holds the audit log and the encrypted certificates: its owner's only, as its keys.
    made = [*workdir.glob("intygstjanst.db*"), workdir / "intygstjanst-dev-keys.json"]
    assert all(path.stat().st_mode & 0o077 == 0 for path in made), [
        (p.name, oct(p.stat().st_mode)) for p in made
    ]
    # Without a client CA bundle and permission table, it says loudly what that means (README "Callers").
    warning = next(out for out in running.output if "development consumer" in out)
    assert "DEVELOPMENT MODE" in warning and "loopback only" in warning
    # Without the business rules, certificates are checked for type and version only (README "Certificate types").
    unchecked = next(out for out in running.output if "INTYG_BUSINESS_RULES_DIR" in out)
    assert "DEVELOPMENT MODE" in unchecked and "type and version only" in unchecked


def test_serve_is_ready_within_seconds_and_stops_on_terminate(server: tuple[Server, int, Path]) -> None:
    running, port, workdir = server
    running.wait_for("listening on", TIMEOUT)

    deadline = time.monotonic() + TIMEOUT
    status, body = None, None
    while time.monotonic() < deadline:
        assert running.process.poll() is None, "".join(running.output)
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        status, body = response.status_code, response.json()
        if status == 200:
            break
        time.sleep(0.1)

    assert status == 200, body
    assert body == {
        "status": "ok",
        "checks": {"schemas": True, "database": True, "migrations": True, "accepting": True},
    }
    assert revision_in(workdir / "intygstjanst.db") == migration.head_revision()
    # A served contract answers over real HTTP too.
    wsdl = httpx.get(
        f"http://127.0.0.1:{port}/clinicalprocess/healthcond/certificate/RegisterCertificate/3/rivtabp21?wsdl"
    )
    assert wsdl.status_code == 200
    assert f"http://127.0.0.1:{port}/clinicalprocess" in wsdl.text
    assert "server" not in wsdl.headers, 'the server names no software (README "Input")'

    running.stop()

    assert running.process.returncode is not None


def _requests_counted(metrics: str) -> float:
    families = text_string_to_metric_families(httpx.get(metrics, timeout=5).text)
    return sum(s.value for f in families for s in f.samples if s.name == "intyg_requests_total")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_metrics_on_their_own_port_for_every_worker_and_not_on_the_apis(
    tmp_path: Path, workers: int
) -> None:
    """A caller of the API sees no metrics (README, INTYG_METRICS_PORT). With several workers the supervising
    process serves them, once, for all of them (multiprocess mode): every request is counted whichever worker
    took it."""
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(COMMAND), "serve", "--port", str(port), "--workers", str(workers)],
        cwd=tmp_path,
        env=clean_environment(PYTHONUNBUFFERED="1", INTYG_METRICS_PORT=str(metrics_port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Server(process)
    try:
        line = running.wait_for("listening on", TIMEOUT)
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        assert f"metrics on {metrics}" in line
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, TIMEOUT, "ready")
        assert httpx.get(f"{base}/metrics").status_code == 404
        before = _requests_counted(metrics)
        sent = 20
        for _ in range(sent):  # a connection each, so that both workers take some
            assert httpx.get(f"{base}/api/citizen/v1/consent").status_code == 401
        wait_until(lambda: _requests_counted(metrics) >= before + sent, 10, "all counted")

        assert _requests_counted(metrics) == before + sent
        assert process.poll() is None
    finally:
        running.stop()
    assert "Traceback" not in "".join(running.output)


def test_serve_refuses_a_metrics_port_that_is_the_apis_or_taken(tmp_path: Path) -> None:
    port = free_port()
    same = subprocess.run(
        [str(COMMAND), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_environment(INTYG_METRICS_PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = refused_start(tmp_path, INTYG_METRICS_PORT=str(holder.getsockname()[1]))

    assert same.returncode == 2
    assert "the metrics port (INTYG_METRICS_PORT) is the API's port" in same.stderr
    assert taken.returncode == 2
    assert "cannot serve the metrics on 127.0.0.1:" in taken.stderr
    assert "Traceback" not in same.stderr + taken.stderr


def test_serve_refuses_the_production_profile_on_development_defaults(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(COMMAND), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_environment(INTYG_PROFILE="production"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2
    assert "portal's key" in done.stderr and "PostgreSQL" in done.stderr
    assert "SOAP callers are not identified" in done.stderr
    assert "INTYG_BUSINESS_RULES_DIR" in done.stderr
    assert not (tmp_path / "intygstjanst.db").exists()


def refused_start(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), "serve", "--port", str(free_port()), *args],
        cwd=tmp_path,
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serve_refuses_to_listen_beyond_loopback_without_identified_callers(
    tmp_path: Path, host: str
) -> None:
    done = refused_start(tmp_path, "--host", host)

    assert done.returncode == 2
    assert "beyond loopback" in done.stderr and "INTYG_TLS_CLIENT_CA_FILE" in done.stderr
    assert not (tmp_path / "intygstjanst.db").exists()


def test_serve_refuses_caller_settings_whose_files_it_cannot_use(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "bad.json").write_text('{"consumers": [{"hsa_id": "SE1"}]}', encoding="utf-8")
    tls = {
        "INTYG_TLS_CERT_FILE": str(pki.server_cert),
        "INTYG_TLS_KEY_FILE": str(pki.server_key),
        "INTYG_TLS_CLIENT_CA_FILE": str(pki.ca_file),
    }

    bad_table = refused_start(tmp_path, INTYG_PERMISSIONS_FILE=str(tmp_path / "bad.json"), **tls)
    no_key = refused_start(
        tmp_path,
        **tls | {"INTYG_TLS_KEY_FILE": str(tmp_path / "missing.key")},
        INTYG_PERMISSIONS_FILE=str(pki.permissions_file),
    )

    for done in (bad_table, no_key):
        assert done.returncode == 2
        assert "refusing to start: the TLS or permission settings cannot be used" in done.stderr
        assert "Traceback" not in done.stderr
    assert "operations" in bad_table.stderr
    assert not (tmp_path / "intygstjanst.db").exists()


def test_migrate_runs_under_the_production_profile_without_serving_settings(tmp_path: Path) -> None:
    database = tmp_path / "intyg.db"
    done = subprocess.run(
        [str(COMMAND), "migrate"],
        cwd=tmp_path,
        env=clean_environment(INTYG_PROFILE="production", INTYG_DATABASE_URL=f"sqlite:///{database}"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "certificates" in tables_in(database)


# --- one line and an exit code, never a traceback (service/cli.py, "Exit codes") ------------------------


def command(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), *args],
        cwd=tmp_path,
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def keys_in_environment(ring: KeyRing = KEYRING) -> dict[str, str]:
    return {f"INTYG_{name.upper()}": value.get_secret_value() for name, value in settings_keys(ring).items()}


def at_once(runs: Mapping[Key, Callable[[], Run]]) -> dict[Key, Run]:
    """What each of ``runs`` returns, run as many at a time as the machine has cores: a command that
    refuses to start is still an interpreter starting, most of a second of CPU."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        started = {key: pool.submit(run) for key, run in runs.items()}
        return {key: future.result() for key, future in started.items()}


ON_THE_STORE = [
    ("migrate",),
    ("rotate-kek",),
    ("erase-care-giver", "SE2321000016-39KJ", "--operator", "SE2321000016-OPS1", "--without-export", "--yes"),
    ("export-care-giver", "SE2321000016-39KJ", "--operator", "SE2321000016-OPS1", "--out", "export"),
]


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each command on the store, on a database nothing answers, by command; run before the tests that
    look at one each (``at_once``)."""
    folder = tmp_path_factory.mktemp("unreachable")
    # Nothing listens on a free port: the connection is refused at once. A command that asks a pool
    # for its connection waits out the pool's timeout first: half a second here, not the default 3 s.
    settings = {
        "INTYG_DATABASE_URL": f"postgresql://intyg:secret@127.0.0.1:{free_port()}/intyg",
        "INTYG_DB_POOL_TIMEOUT_SECONDS": "0.5",
        **keys_in_environment(),
    }
    return at_once({args[0]: partial(command, folder, *args, **settings) for args in ON_THE_STORE})


@pytest.mark.parametrize("name", [args[0] for args in ON_THE_STORE])
def test_a_command_on_an_unreachable_database_says_so_in_one_line(
    unreachable: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    done = unreachable[name]

    assert done.returncode == 2
    assert done.stderr.startswith("cannot reach the store: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "secret" not in done.stderr


BAD_KEYS = {
    "a KEK that is not base64": {"INTYG_KEK": "k1:not base64!", "INTYG_LOOKUP_KEY": encode_key(bytes(32))},
    "a KEK without its lookup key": {"INTYG_KEK": "k1:" + encode_key(bytes(32))},
    "a keys file that is missing": {"INTYG_KEYS_FILE": "/nonexistent/keys.json"},
}
KEYED = [*ON_THE_STORE, ("serve", "--port", "1")]


@pytest.fixture(scope="module")
def refused_for_its_keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str], tuple[subprocess.CompletedProcess[str], Path]]:
    """Each command with each kind of keys it cannot use, by command and kind, each in a folder of its
    own (its run, and the folder); run before the tests that look at one each (``at_once``)."""
    base = tmp_path_factory.mktemp("keys")

    def run(args: tuple[str, ...], keys: str, folder: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
        database = f"sqlite:///{folder / 'intyg.db'}"
        return command(folder, *args, INTYG_DATABASE_URL=database, **BAD_KEYS[keys]), folder

    runs = {}
    for args in KEYED:
        for keys in BAD_KEYS:
            folder = base / f"{args[0]} with {keys}"
            folder.mkdir()
            runs[args[0], keys] = partial(run, args, keys, folder)
    return at_once(runs)


@pytest.mark.parametrize("keys", BAD_KEYS)
@pytest.mark.parametrize("name", [args[0] for args in KEYED])
def test_a_command_with_keys_it_cannot_use_says_so_in_one_line(
    refused_for_its_keys: dict[tuple[str, str], tuple[subprocess.CompletedProcess[str], Path]],
    name: str,
    keys: str,
) -> None:
    done, folder = refused_for_its_keys[name, keys]

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "INTYG_KEK" in done.stderr or "keys.json" in done.stderr
    assert "not base64!" not in done.stderr  # never key material
    assert not (folder / "intyg.db").exists()
