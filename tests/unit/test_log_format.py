"""Which format the log is written in, and the text lines' shape (``service/telemetry.py``). The formats as
real processes write them, to a pipe and to a terminal, are ``tests/integration/test_logs.py``'s."""

from __future__ import annotations

import io
import logging
import re
from typing import Literal

import pytest

from service.config import LogFormat, Settings
from service.telemetry import TextFormatter, writes_text


class FakeStream(io.StringIO):
    def __init__(self, *, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize(
    ("log_format", "profile", "terminal", "text"),
    [
        ("auto", "development", True, True),
        ("auto", "development", False, False),
        ("auto", "production", True, False),
        ("text", "production", False, True),
        ("json", "development", True, False),
    ],
)
def test_text_is_written_where_asked_or_on_a_terminal_outside_production(
    log_format: LogFormat, profile: Literal["development", "production"], terminal: bool, text: bool
) -> None:
    settings = Settings(log_format=log_format, profile=profile)

    assert writes_text(settings, FakeStream(terminal=terminal)) is text


def record(level: int, message: str, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "service.request", "levelno": level, "msg": message, **extra})
    made.levelname = logging.getLevelName(level)
    return made


def test_a_text_line_has_the_time_level_logger_message_and_extras_with_the_request_id_last() -> None:
    line = TextFormatter(colour=False).format(
        record(logging.INFO, "request", operation="GET /livez", status=200, request_id="abc")
    )

    assert re.fullmatch(
        r'\d\d:\d\d:\d\d\.\d{3} INFO    service\.request: request operation="GET /livez" status=200 '
        r"request_id=abc",
        line,
    ), line


def test_a_text_line_outside_a_request_names_no_request_id() -> None:
    line = TextFormatter(colour=False).format(record(logging.INFO, "sealed", request_id=""))

    assert line.endswith("service.request: sealed")


def test_warnings_and_errors_are_coloured_only_for_a_terminal() -> None:
    warning = record(logging.WARNING, "NO BROKER: ...")

    assert "\033[1;33mWARNING service.request: NO BROKER: ...\033[0m" in TextFormatter(colour=True).format(
        warning
    )
    assert "\033[" not in TextFormatter(colour=False).format(warning)
    assert "\033[" not in TextFormatter(colour=True).format(record(logging.INFO, "request"))
