"""The permission table (``service/access.py``, pure) and the reading of a caller's client certificate
(``service/soap/caller.py``): who may call which operation at which logical address, and which HSA id a
certificate proves. Through the app: ``tests/integration/test_callers.py``; over real TLS:
``tests/integration/test_mutual_tls.py``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service import access, errors
from service.soap.caller import Callers, ClientCertificates, system_hsa_id
from tests.tls import DAY, NOW, WEBCERT, Authority, Issued

WEBCERT_ENTRY = access.Consumer(
    hsa_id=WEBCERT,
    name="Webcert",
    operations=frozenset({"RegisterCertificate", "GetCertificate:2"}),
    care_givers=frozenset({"SE2321000016-39KJ"}),
    logical_addresses=frozenset({"SE2321000016-39KJ"}),
)


# --- The permission table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "major", "allowed"),
    [
        ("RegisterCertificate", 3, True),  # a name alone: every version
        ("GetCertificate", 2, True),  # "GetCertificate:2": that version
        ("GetCertificate", 1, False),  # ... and not the 2013 citizen contract
        ("ListCertificatesForCare", 3, False),
    ],
)
def test_an_entry_names_operations_by_name_or_by_name_and_major_version(
    operation: str, major: int, allowed: bool
) -> None:
    assert WEBCERT_ENTRY.may_call(operation, major) is allowed


def test_a_call_outside_the_entrys_operations_or_addresses_is_not_permitted() -> None:
    access.require_call(
        WEBCERT_ENTRY, operation="RegisterCertificate", major=3, logical_address="SE2321000016-39KJ"
    )
    with pytest.raises(errors.CallerNotPermitted, match="operation"):
        access.require_call(
            WEBCERT_ENTRY, operation="SetConsent", major=1, logical_address="SE2321000016-39KJ"
        )
    with pytest.raises(errors.CallerNotPermitted, match="logical address"):
        access.require_call(WEBCERT_ENTRY, operation="RegisterCertificate", major=3, logical_address="SE1")


def test_the_development_consumer_may_do_everything() -> None:
    consumer = access.DEVELOPMENT_CONSUMER

    access.require_call(consumer, operation="RemoveCertificateForCare", major=1, logical_address="anything")
    assert consumer.care_givers is None


def test_a_system_the_table_does_not_name_is_not_permitted() -> None:
    table = access.PermissionTable.of([WEBCERT_ENTRY])

    assert table.consumer(WEBCERT) is WEBCERT_ENTRY
    with pytest.raises(errors.CallerNotPermitted):
        table.consumer("SE0000000000-NONE")


def test_a_table_naming_a_system_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        access.PermissionTable.of([WEBCERT_ENTRY, WEBCERT_ENTRY])


# --- The HSA id a certificate proves ---------------------------------------------------------------------

AUTHORITY = Authority("Unit test CA")


def test_the_hsa_id_is_the_subjects_serial_number_as_siths_function_certificates_carry_it() -> None:
    assert system_hsa_id(AUTHORITY.client(WEBCERT).certificate) == WEBCERT


def test_without_a_serial_number_the_hsa_id_is_the_common_name() -> None:
    named = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SE2321000016-CN01")])
    certificate = AUTHORITY.client(WEBCERT).certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(named)
        .issuer_name(certificate.issuer)
        .public_key(certificate.public_key())
        .serial_number(1)
        .not_valid_before(certificate.not_valid_before_utc)
        .not_valid_after(certificate.not_valid_after_utc)
    )
    assert system_hsa_id(builder.sign(AUTHORITY.key, hashes.SHA256())) == "SE2321000016-CN01"


@pytest.mark.parametrize(
    ("serial_number", "utf8"),
    [
        ("SE5565594230-B8N\x00", True),
        ("SE5565594230-B8N\x00SE2321000016-PORT", True),
        ("development", False),
        ("SE556559423-B8N", False),
        ("SE5565594230-", False),
        ("SE5565594230-B8N Webcert", True),
    ],
    ids=["NUL after", "NUL between", "no HSA id", "short organisation number", "no own part", "more after"],
)
def test_a_certificate_naming_no_hsa_id_identifies_no_system(serial_number: str, utf8: bool) -> None:
    # A NUL (a UTF8String may hold one) from a certificate of the trusted CA once failed the audit
    # record's insert.
    certificates = ClientCertificates([AUTHORITY.certificate])
    issued = AUTHORITY.client(serial_number, utf8=utf8)

    with pytest.raises(errors.CallerNotPermitted, match="HSA id"):
        certificates.verified_in_handshake(issued.pem)


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_a_forwarded_certificate_is_verified_against_the_bundle_and_its_validity_checked_every_time() -> None:
    clock = FakeClock(NOW)
    certificates = ClientCertificates([AUTHORITY.certificate], clock=clock)
    client = AUTHORITY.client(WEBCERT, not_after=NOW + DAY)

    assert certificates.forwarded(client.pem) == WEBCERT
    # Remembered after the first verification, but a certificate that has since expired is refused.
    clock.now = NOW + 2 * DAY
    with pytest.raises(errors.CallerNotPermitted, match="validity"):
        certificates.forwarded(client.pem)


@pytest.mark.parametrize(
    "client",
    [
        AUTHORITY.client(WEBCERT, not_before=NOW - 3 * DAY, not_after=NOW - DAY),
        Authority("Another CA").client(WEBCERT),
        AUTHORITY.client(WEBCERT, extended_usage=[ExtendedKeyUsageOID.SERVER_AUTH]),
        AUTHORITY.client(WEBCERT, extended_usage=None),
    ],
    ids=["expired", "another CA", "serverAuth only", "no extended key usage"],
)
def test_a_forwarded_certificate_that_does_not_verify_is_refused(client: Issued) -> None:
    certificates = ClientCertificates([AUTHORITY.certificate])

    with pytest.raises(errors.CallerNotPermitted):
        certificates.forwarded(client.pem)


def test_a_certificate_verified_in_the_handshake_still_needs_the_client_auth_usage() -> None:
    certificates = ClientCertificates([AUTHORITY.certificate])

    assert certificates.verified_in_handshake(AUTHORITY.client(WEBCERT).pem) == WEBCERT
    with pytest.raises(errors.CallerNotPermitted, match="client authentication"):
        certificates.verified_in_handshake(AUTHORITY.client(WEBCERT, extended_usage=None).pem)


def test_something_that_is_not_a_certificate_identifies_nobody() -> None:
    certificates = ClientCertificates([AUTHORITY.certificate])

    with pytest.raises(errors.CallerNotPermitted):
        certificates.forwarded("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(errors.CallerNotPermitted):
        certificates.forwarded("hello")


def test_a_permission_table_cannot_be_used_without_a_ca_bundle() -> None:
    with pytest.raises(ValueError, match="CA bundle"):
        Callers(table=access.PermissionTable.of([WEBCERT_ENTRY]))
