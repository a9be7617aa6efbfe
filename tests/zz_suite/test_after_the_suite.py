"""Checks over what the whole suite produced. This folder sorts last, so pytest runs it after every
other test of the run: the metrics registry and the kept log hold everything the suite did.

No metric label value and no log line may carry a personal identity number, a certificate id, an HSA
person id or document text (DOMAIN.md's privacy, issue "Operators"). The suite's own requests are
the probe: they used real identity numbers, certificate ids and the peer certificates' text.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY

from tests.conftest import SUITE_LOG

# 12 digits as a personnummer or samordningsnummer (with or without the dash), an HSA id of a person
# as the tests use them, a UUID (the peer requests' certificate ids), the tests' certificate ids.
FORBIDDEN = {
    "personal identity number": re.compile(r"(?<!\d)(?:19|20)\d{6}-?\d{4}(?!\d)"),
    "HSA id": re.compile(r"SE\d{10}-[0-9A-Z]{4}"),
    "certificate id (uuid)": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "certificate id (test)": re.compile(r"\b(?:cert|c|bench|x|p)-[\w-]+"),
    "document text": re.compile(r"Arbetsplatsolycka|Skada på multipla|Olivia|Klockarevägen"),
}


def _label_values() -> set[str]:
    return {
        value
        for family in REGISTRY.collect()
        for sample in family.samples
        for value in sample.labels.values()
    }


def test_the_suite_produced_metrics_and_logs_to_check() -> None:
    values = _label_values()
    if not any(v.startswith("RegisterCertificate") for v in values):
        pytest.skip("run alone: the suite's requests are what this checks (run the whole suite)")
    assert SUITE_LOG, "the suite logged nothing to check"


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_metric_label_value_names_a_person_or_a_certificate(what: str) -> None:
    found = sorted(v for v in _label_values() if FORBIDDEN[what].search(v))
    assert not found, f"{what} in metric labels: {found[:5]}"


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_log_line_of_the_suite_names_a_person_or_a_certificate(what: str) -> None:
    found = [line for line in SUITE_LOG if FORBIDDEN[what].search(line)]
    assert not found, f"{what} in {len(found)} log lines, e.g. {found[0][:300]}"
