"""Fuzzing the SOAP endpoints through the app, bounded (README "Input"): valid requests of several
contracts, mangled by random byte edits or by changed values and elements, are answered in the
contract's own form — an OK or business ``result``, or a ``soap:Client`` fault — never an internal
error, and the audit chain they leave is intact. ``tests/unit/test_fuzz.py`` fuzzes the parser and personnummer validation on their own.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from lxml import etree

from service import loader
from service.config import Settings
from service.store import audit_verification
from tests.integration import soap as s
from tests.integration.soap import SoapClient
from tests.reference import PEER_REQUESTS

PATIENT = "191212121212"
CERTIFICATE = "fuzz-certificate-1"

# One request of each kind a care system or the portal sends, valid as they stand.
SEEDS: list[tuple[str, bytes]] = [
    (s.path_of(op, major), s.envelope_for(op, major, body))
    for op, major, body in [
        ("GetCertificate", 2, s.get_certificate(CERTIFICATE, "HSVARD")),
        ("ListCertificatesForCare", 3, s.list_for_care(PATIENT, units=("SE2321000016-H489",))),
        ("ListCertificatesForCitizen", 4, s.list_for_citizen(PATIENT)),
        ("SetCertificateStatus", 2, s.set_status(CERTIFICATE, "FKASSA", "SENTTOFK")),
        ("RemoveCertificateForCare", 1, s.remove_for_care(CERTIFICATE)),
        ("SetConsent", 1, s.set_consent(PATIENT, True)),
        ("GetConsent", 1, s.get_consent(PATIENT)),
    ]
]
# A real certificate, as Webcert registers it, where ../shared holds the national service's requests.
REGISTER = (
    (s.path_of("RegisterCertificate", 3), s.register_envelope(CERTIFICATE, PATIENT).encode())
    if PEER_REQUESTS.is_dir()
    else None
)
if REGISTER is not None:
    SEEDS.append(REGISTER)

_BYTES = st.binary(min_size=1, max_size=12) | st.sampled_from(
    [b"<", b">", b"&", b"&amp;", b"]]>", b"\x00", b"\xff\xfe", b"<!DOCTYPE x>", b"</", b"\xc3"]
)
# An edit: where (a fraction of the length), what (delete, insert, replace, truncate, repeat) and
# how much; several of them on one seed.
_EDIT = st.tuples(
    st.floats(0, 1), st.sampled_from(["delete", "insert", "replace", "truncate", "repeat"]), _BYTES
)


def _mangle(data: bytes, edits: list[tuple[float, str, bytes]]) -> bytes:
    for where, how, piece in edits:
        at = int(where * len(data))
        span = len(piece)
        if how == "delete":
            data = data[:at] + data[at + span :]
        elif how == "insert":
            data = data[:at] + piece + data[at:]
        elif how == "replace":
            data = data[:at] + piece + data[at + span :]
        elif how == "truncate":
            data = data[:at]
        else:
            data = data[:at] + data[at : at + 40 * span] * 2 + data[at + 40 * span :]
    return data


# Structural edits keep the XML well formed, so that the fuzz reaches validation and the operations,
# not only the parser: an element's text replaced, an element dropped, or one repeated.
_TEXTS = st.text(max_size=30) | st.sampled_from(
    ["", " ", "191212121212", "19121212-1212", "20260101", "2026-13-45T25:61:00", "-1", "9" * 40, "x" * 300]
)
_STRUCTURAL = st.tuples(st.floats(0, 1), st.sampled_from(["text", "drop", "repeat"]), _TEXTS)


def _restructure(data: bytes, edits: list[tuple[float, str, str]]) -> bytes:
    root = etree.fromstring(data)
    for where, how, text in edits:
        elements = [e for e in root.iter() if isinstance(e.tag, str) and e is not root]
        if not elements:
            break
        element = elements[int(where * (len(elements) - 1))]
        parent = element.getparent()
        assert parent is not None
        if how == "text":
            # XML has no place for most control characters; lxml refuses them rather than write them.
            element.text = "".join(c for c in text if c.isprintable() or c in "\t\n")
        elif how == "drop":
            parent.remove(element)
        else:
            parent.insert(parent.index(element), copy.deepcopy(element))
    return etree.tostring(root)


def answer_in_the_contracts_form(soap: SoapClient, path: str, data: bytes) -> str:
    """What the service answered, checked to be the contract's own form and never an internal error."""
    # SoapClient.post checks the envelope: a fault is HTTP 500 by SOAP 1.1, anything else 200 and valid
    # against our schemas and the reference contract.
    reply = soap.post(path, data)
    if reply.is_fault:
        assert reply.fault_code == "soap:Client", reply.fault_string
        return f"soap:Client fault: {reply.fault_string}"
    if any(etree.QName(e).localname == "result" for e in reply.body):
        code, _, error = reply.result()
        assert error != "TECHNICAL_ERROR", reply.result()
        return f"result {code} {error or ''}".strip()
    # A contract without a result (GetCertificate 2) answers with its certificate, valid as checked.
    return "answered without a result"


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, len(SEEDS) - 1), edits=st.lists(_STRUCTURAL, min_size=1, max_size=3))
def test_requests_with_wrong_values_or_elements_get_the_contracts_answer(
    soap: SoapClient, seed: int, edits: list[tuple[float, str, str]]
) -> None:
    path, data = SEEDS[seed]
    # Shown by --hypothesis-show-statistics: how much of the fuzz got past the parser.
    event(answer_in_the_contracts_form(soap, path, _restructure(data, edits)))


@pytest.mark.parametrize("seed", range(len(SEEDS)), ids=[path.split("/")[-3] for path, _ in SEEDS])
def test_every_seed_is_a_request_the_contract_accepts(soap: SoapClient, seed: int) -> None:
    path, data = SEEDS[seed]
    # Its business answer (e.g. "Certificate not found", no consent) is fine; a refused message is not.
    answer = answer_in_the_contracts_form(soap, path, data)
    assert not any(refusal in answer for refusal in ("contract", "envelope", "header", "XML", "Body")), answer


def test_mangled_requests_get_the_contracts_answer_and_leave_the_audit_chain_intact(
    soap: SoapClient, settings: Settings
) -> None:
    # One app and one database serve every example, as one service serves every caller.
    @hypothesis_settings(
        max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(
        seed=st.integers(0, len(SEEDS) - 1),
        edits=st.lists(_EDIT, min_size=1, max_size=4),
        register_first=st.booleans(),
    )
    def answered_in_the_contracts_form(
        seed: int, edits: list[tuple[float, str, bytes]], register_first: bool
    ) -> None:
        if register_first and REGISTER is not None:
            # So that gets, status changes and removals sometimes find the certificate they name.
            soap.post(*REGISTER)
        path, data = SEEDS[seed]
        event(answer_in_the_contracts_form(soap, path, _mangle(data, edits)))

    answered_in_the_contracts_form()
    # Once, after all the examples: the chain is append-only and verified whole from its first record,
    # so an example that broke it leaves it broken for this check.
    verdict = audit_verification.verify_database(settings.database_url, loader.audit_verify_keys(settings))
    assert verdict.intact, verdict.problem
