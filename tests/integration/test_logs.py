"""The log as the service writes it (``service/telemetry.py``, README.md "Logs"), from real processes: JSON
lines where stdout is a pipe (a container's log, a collector), short text lines for a person on a terminal
(a pseudo-terminal here) or with ``--log-format text``, and JSON again where asked or in the production
profile. alembic's lines and the development warnings go through the same handler; the warnings are
coloured on a terminal only. No line, in either format, holds an identity number (``tests/leaks.py``).

The text lines' own shape is ``tests/unit/test_log_format.py``'s."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import httpx

from tests import leaks
from tests.integration.test_cli import COMMAND, clean_environment
from tests.server import free_port, running

# A citizen's identity number in a request's path: its log event names the route, never the path.
PIN_PATH = "/api/citizen/v1/certificates/191212121212"
COLOURED_WARNING = "\033[1;33mWARNING"


def served_log(tmp_path: Path, *args: str) -> list[str]:
    """The lines a served service writes to a pipe: started, asked once, stopped."""
    log = tmp_path / "service.log"
    with log.open("wb") as out, running(tmp_path, *args, log=out) as (base, _process):
        assert httpx.get(base + PIN_PATH, headers={"X-Request-ID": "logs-1"}).status_code == 401
    return log.read_text(encoding="utf-8").splitlines()


class Terminal:
    """``intygstjanst ARGS`` with a pseudo-terminal as its stdout and stderr, as ``./dev serve`` in a shell."""

    def __init__(self, tmp_path: Path, *args: str, **settings: str) -> None:
        self.leader, follower = pty.openpty()
        self.process = subprocess.Popen(
            [str(COMMAND), *args],
            cwd=tmp_path,
            env=clean_environment(**settings),
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        self.output = ""

    def read_until(self, text: str | None, seconds: float = 30) -> str:
        """What was written until ``text`` appeared (or, with ``None``, until the process closed it)."""
        deadline = time.monotonic() + seconds
        while (text is None or text not in self.output) and time.monotonic() < deadline:
            ready, _, _ = select.select([self.leader], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                chunk = b""
            if not chunk:
                break
            self.output += chunk.decode("utf-8").replace("\r\n", "\n")
        assert text is None or text in self.output, f"{text!r} not written:\n{self.output}"
        return self.output

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        returncode = self.process.wait(timeout=20)
        os.close(self.leader)
        return returncode


def on_a_terminal(tmp_path: Path, *args: str, **settings: str) -> str:
    """What ``intygstjanst ARGS`` writes to a pseudo-terminal, until it exits."""
    terminal = Terminal(tmp_path, *args, **settings)
    try:
        output = terminal.read_until(None)
    finally:
        returncode = terminal.close()
    assert returncode == 0, output
    return output


def json_events(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines]


def test_serve_writes_one_json_object_per_line_to_a_pipe(tmp_path: Path) -> None:
    lines = served_log(tmp_path)

    # serve's one printed line says where it listens, for a person; every logged line is JSON.
    logged = [line for line in lines if "listening on" not in line]
    events = json_events(logged)
    assert any(e["logger"] == "alembic.runtime.migration" for e in events)
    warnings = [e for e in events if e["level"] == "WARNING"]
    assert any(str(e["message"]).startswith("DEVELOPMENT MODE") for e in warnings)
    assert any(str(e["message"]).startswith("NO BROKER") for e in warnings)
    request = next(e for e in events if e["message"] == "request")
    assert request["request_id"] == "logs-1"
    assert request["status"] == 401
    assert not leaks.in_log(lines)


def test_serve_writes_text_lines_to_a_pipe_when_asked(tmp_path: Path) -> None:
    lines = served_log(tmp_path, "--log-format", "text")

    text = "\n".join(lines)
    assert not [line for line in lines if line.startswith("{")]
    assert "INFO    alembic.runtime.migration: Running upgrade" in text
    assert "WARNING service: DEVELOPMENT MODE" in text
    assert "WARNING service: NO BROKER" in text
    request = next(line for line in lines if "service.request: request" in line)
    assert 'operation="GET /api/citizen/v1/certificates/{certificate_id}"' in request
    assert "status=401" in request and request.endswith("request_id=logs-1")
    # Not a terminal: no escape codes in a file.
    assert "\033[" not in text
    assert not leaks.in_log(lines)


def test_migrate_writes_text_lines_on_a_terminal_by_default(tmp_path: Path) -> None:
    # `serve` would be the same: the terminal is stdout's, whichever command writes to it.
    output = on_a_terminal(tmp_path, "migrate", INTYG_DATABASE_URL=f"sqlite:///{tmp_path / 'tty.db'}")

    lines = output.splitlines()
    assert any("INFO    alembic.runtime.migration: Running upgrade  -> 0001" in line for line in lines)
    assert not [line for line in lines if line.startswith("{")]
    assert "database schema is at the newest version" in output
    assert not leaks.in_log(lines)


def test_serve_writes_text_lines_on_a_terminal_with_the_development_warnings_coloured(tmp_path: Path) -> None:
    port = free_port()
    terminal = Terminal(tmp_path, "serve", "--port", str(port))
    try:
        terminal.read_until("Application startup complete")
        response = httpx.get(f"http://127.0.0.1:{port}{PIN_PATH}", headers={"X-Request-ID": "logs-2"})
        assert response.status_code == 401
        output = terminal.read_until("request_id=logs-2")
    finally:
        terminal.close()

    lines = output.splitlines()
    assert not [line for line in lines if line.startswith("{")]
    warnings = [line for line in lines if "WARNING" in line]
    assert any("DEVELOPMENT MODE" in line for line in warnings)
    assert any("NO BROKER" in line for line in warnings)
    assert all(COLOURED_WARNING in line and line.endswith("\033[0m") for line in warnings), warnings
    assert any("INFO    alembic.runtime.migration: Running upgrade" in line for line in lines)
    assert not leaks.in_log(lines)


def test_json_is_written_on_a_terminal_when_asked_or_in_the_production_profile(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'tty.db'}"

    asked = on_a_terminal(tmp_path, "migrate", "--log-format", "json", INTYG_DATABASE_URL=database)
    production = on_a_terminal(
        tmp_path,
        "migrate",
        INTYG_DATABASE_URL=f"sqlite:///{tmp_path / 'prod.db'}",
        INTYG_PROFILE="production",
    )

    for output in (asked, production):
        logged = [line for line in output.splitlines() if line.startswith("{")]
        assert logged, output
        assert all(event["logger"] == "alembic.runtime.migration" for event in json_events(logged))
