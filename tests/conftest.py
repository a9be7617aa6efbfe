"""Suite-wide: every log record any test produces is kept, formatted as the service prints it, so
that ``tests/zz_suite`` can check the whole suite's log output once every other test has run."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from service.telemetry import json_formatter

SUITE_LOG: list[str] = []


# The test clients' own request logs are not the service's output.
_CLIENTS = ("httpx", "httpcore", "hpack", "urllib3", "zeep")


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_CLIENTS):
            SUITE_LOG.append(self.format(record))


@pytest.fixture(scope="session", autouse=True)
def suite_log() -> Iterator[list[str]]:
    handler = _Keep(level=logging.DEBUG)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    yield SUITE_LOG
    root.removeHandler(handler)
    root.setLevel(previous)
