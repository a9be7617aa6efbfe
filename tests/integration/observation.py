"""What the service's telemetry made of requests, read in process: the counters they moved and their
request log events.

For the tests that a refused foreign id (another care giver's or another citizen's certificate) is
counted and logged as the unknown id it is answered as (README "Callers"): ``test_callers.py`` (SOAP) and
``test_rest_api.py`` (REST). The audit trail keeps the truth, and those tests check that too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY

# The counters a request's outcome or refusal moves. Not the statements and seal lag: background work
# moves them whenever it runs.
COUNTERS = ("intyg_requests_total", "intyg_request_duration_seconds_count", "intyg_refusals_total")

Sample = tuple[str, tuple[tuple[str, str], ...]]


def _counters() -> dict[Sample, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name in COUNTERS
    }


@dataclass
class Observation:
    # Each counter sample that moved, by how much.
    counted: dict[Sample, float] = field(default_factory=dict)
    # Each request event's (operation, channel, outcome, status).
    logged: list[tuple[str, str, str, int]] = field(default_factory=list)


class _Requests(logging.Handler):
    def __init__(self, into: list[tuple[str, str, str, int]]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "request":
            extra = record.__dict__
            self.into.append((extra["operation"], extra["channel"], extra["outcome"], extra["status"]))


@contextlib.contextmanager
def observed() -> Iterator[Observation]:
    """The telemetry of the requests made inside the block (the app runs in this process)."""
    observation = Observation()
    before = _counters()
    logger = logging.getLogger("service.request")
    handler = _Requests(observation.logged)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield observation
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        after = _counters()
        observation.counted = {
            sample: value - before.get(sample, 0.0)
            for sample, value in after.items()
            if value != before.get(sample, 0.0)
        }
