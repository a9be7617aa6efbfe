"""Suite-wide: after every test, what that test produced is looked at for leaks (``tests/leaks.py``):
the log records emitted while it ran (formatted as the service prints them), the metric label values
that appeared meanwhile, and the SQLite files written under pytest's temporary directory, in the test's
own folders and in those of module- and session-scoped fixtures (``leaks.Files``). A leak is an error at
the teardown of the test that leaked, whatever order the tests run in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from service.telemetry import json_formatter
from tests import leaks

# The test clients' own request logs are not the service's output.
_CLIENTS = ("httpx", "httpcore", "hpack", "urllib3", "zeep")


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_CLIENTS):
            self.lines.append(self.format(record))


@dataclass
class _Seen:
    """What earlier tests already left: metric label values and temporary files."""

    files: leaks.Files
    labels: set[str] = field(default_factory=set)


@pytest.fixture(scope="session")
def leak_baseline(tmp_path_factory: pytest.TempPathFactory) -> _Seen:
    return _Seen(leaks.Files(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def kept_log() -> Iterator[_Keep]:
    handler = _Keep()
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(autouse=True)
def nothing_leaks(kept_log: _Keep, leak_baseline: _Seen) -> Iterator[list[str]]:
    """Yields this test's log lines so far (a test may look at them; ``test_leaks.py`` does)."""
    leak_baseline.files.start()
    # Records emitted between tests (a background thread's) count for the next one.
    yield kept_log.lines
    lines, kept_log.lines = kept_log.lines, []
    found = leaks.in_log(lines)
    labels = leaks.label_values()
    found += leaks.in_labels(labels - leak_baseline.labels)
    leak_baseline.labels = labels
    found += leak_baseline.files.leaks()
    assert not found, "this test leaked:\n" + "\n".join(found)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse",
        action="store_true",
        help="run the tests in the reverse of their order (.ci/run does, to show no test needs another first)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()
