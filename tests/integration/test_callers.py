"""The permission table through the app, in process: who may call which SOAP operation, at which
logical address, for which care givers (README "Callers"), and that every refusal is audited as denied and
answered with the contract's error.

``FakeTls`` is a fake of the server's TLS layer (``service/tls.py``): it puts the client certificate
the test presents in each request's ASGI TLS extension, as the real server does after OpenSSL has
verified it, and sets the connection's peer address (for the trusted-proxy mode). The real handshakes
are in ``tests/integration/test_mutual_tls.py``; the pure parts in ``tests/unit/test_access.py``,
``tests/unit/test_rules.py`` and ``tests/unit/test_operations.py``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import create_engine, select
from starlette.types import ASGIApp, Receive, Scope, Send

from service.app import create_app
from service.config import Settings
from service.store.tables import audit_records
from tests.integration import soap as s
from tests.integration.observation import observed
from tests.integration.soap import Reply, SoapClient
from tests.keys import settings_keys
from tests.tls import (
    FORSAKRINGSKASSAN,
    GIVER_A,
    GIVER_B,
    JOURNAL,
    PORTAL,
    UNKNOWN,
    WEBCERT,
    Issued,
    Pki,
    make_pki,
)

PATIENT = "191212121212"
PROXY = "10.1.2.3"


class FakeTls:
    """A fake of the server's TLS layer: the presented certificate in the TLS extension, the peer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.presented: Issued | None = None
        self.peer = "192.0.2.10"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = dict(scope)
            scope["client"] = (self.peer, 50000)
            if self.presented is not None:
                tls = {"client_cert_chain": [self.presented.pem], "tls_version": 0x0304}
                scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
        await self.app(scope, receive, send)


class Callers:
    """One app, and SOAP calls as one system or another."""

    def __init__(self, client: TestClient, tls: FakeTls, pki: Pki, database_url: str) -> None:
        self.client, self.tls, self.pki, self.database_url = client, tls, pki, database_url
        self.soap = SoapClient(client)

    def as_(self, name: str | None) -> SoapClient:
        self.tls.presented = self.pki.clients[name] if name else None
        return self.soap

    def audit(self) -> list[tuple[str, str, str]]:
        """(action, outcome, actor_id) of every committed audit record, oldest first; a refused call's
        action with what was called: ``call GetConsent:1``."""
        engine = create_engine(self.database_url.replace("sqlite+aiosqlite", "sqlite"))
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(
                        audit_records.c.action,
                        audit_records.c.called,
                        audit_records.c.outcome,
                        audit_records.c.actor_id,
                    ).order_by(audit_records.c.seq.is_(None), audit_records.c.seq, audit_records.c.id)
                ).all()
        finally:
            engine.dispose()
        return [(f"{a} {c}" if c else str(a), str(o), str(i)) for a, c, o, i in rows]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings_with_table(database_url: str, pki: Pki, **more: object) -> Settings:
    return Settings(
        database_url=database_url,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca_file,
        permissions_file=pki.permissions_file,
        trusted_proxies=[ipaddress.ip_network(PROXY)],
        **settings_keys(),
        **more,  # type: ignore[arg-type]
    )


@pytest.fixture
def callers(database_url: str, pki: Pki) -> Iterator[Callers]:
    tls = FakeTls(create_app(settings_with_table(database_url, pki)))
    with TestClient(tls) as client:
        yield Callers(client, tls, pki, database_url)


def assert_refused(reply: Reply) -> None:
    """The contract's answer to a caller without permission: ERROR/APPLICATION_ERROR, never a 500
    of the service's own (a SOAP Fault is soap:Client where the contract has no result)."""
    if reply.is_fault:
        assert reply.fault_code == "soap:Client", reply.fault_string
        assert reply.fault_string == "The calling system is not permitted to make this call"
    else:
        assert reply.result() == (
            "ERROR",
            "The calling system is not permitted to make this call",
            "APPLICATION_ERROR",
        )


def at_address(envelope: str, address: str) -> str:
    """A peer-request envelope sent to another logical address."""
    return re.sub(r"<urn:LogicalAddress>[^<]*<", f"<urn:LogicalAddress>{address}<", envelope)


def register_for(
    soap: SoapClient, certificate_id: str, care_giver: str = GIVER_A, patient: str = PATIENT
) -> Reply:
    envelope = s.register_envelope(certificate_id, patient, care_giver=care_giver)
    return soap.post(s.path_of("RegisterCertificate", 3), at_address(envelope, care_giver))


# --- Without a permission table: the development consumer ---------------------------------------------


def test_without_a_permission_table_every_caller_is_the_development_consumer(
    soap: SoapClient, database_url: str
) -> None:
    assert soap.call("GetConsent", 1, s.get_consent(PATIENT)).result()[0] == "OK"
    # Any address, any operation, no certificate: all allowed, audited as the development consumer.
    assert soap.call("SetConsent", 1, s.set_consent(PATIENT, True), address="ANY").result()[0] == "OK"

    engine = create_engine(database_url.replace("sqlite+aiosqlite", "sqlite"))
    try:
        with engine.connect() as connection:
            actors = set(connection.execute(select(audit_records.c.actor_id)).scalars())
    finally:
        engine.dispose()
    assert actors == {"development"}


# --- Identity: the TLS extension, or a trusted proxy's header ---------------------------------------------


def test_a_permitted_system_is_served_and_the_audit_names_its_certificates_hsa_id(callers: Callers) -> None:
    reply = callers.as_("portal").call("GetConsent", 1, s.get_consent(PATIENT))

    assert reply.result()[0] == "OK"
    assert callers.audit() == [("read_consent", "ok", PORTAL)]


@pytest.mark.parametrize(
    ("client", "system"),
    [(None, "unidentified"), ("no_eku", "unidentified"), ("unknown", UNKNOWN)],
    ids=["no certificate", "no clientAuth usage", "not in the table"],
)
def test_a_caller_that_proves_no_permitted_system_is_refused_and_audited(
    callers: Callers, client: str | None, system: str
) -> None:
    for operation, major, body in [
        ("GetConsent", 1, s.get_consent(PATIENT)),  # a result: ERROR / APPLICATION_ERROR
        ("ListCertificatesForCare", 3, s.list_for_care(PATIENT, care_giver=GIVER_A)),  # no result: a fault
    ]:
        assert_refused(callers.as_(client).call(operation, major, body))

    assert callers.audit() == [
        ("call GetConsent:1", "denied", system),
        ("call ListCertificatesForCare:3", "denied", system),
    ]


def test_a_trusted_proxy_names_the_caller_in_its_header_and_anyone_else_is_ignored(callers: Callers) -> None:
    callers.tls.presented = None
    callers.client.headers["ssl-client-cert"] = callers.pki.clients["portal"].forwarded
    body = s.get_consent(PATIENT)

    callers.tls.peer = PROXY
    assert callers.soap.call("GetConsent", 1, body).result()[0] == "OK"
    # The same header from an address that is not a trusted proxy identifies nobody.
    callers.tls.peer = "10.1.2.4"
    assert_refused(callers.soap.call("GetConsent", 1, body))

    assert callers.audit() == [
        ("read_consent", "ok", PORTAL),
        ("call GetConsent:1", "denied", "unidentified"),
    ]


@pytest.mark.parametrize("client", ["expired", "other_ca", "server_auth", "no_eku"])
def test_a_forwarded_certificate_is_verified_again_against_the_ca_bundle(
    callers: Callers, client: str
) -> None:
    callers.tls.peer = PROXY
    callers.client.headers["ssl-client-cert"] = callers.pki.clients[client].forwarded

    assert_refused(callers.as_(None).call("GetConsent", 1, s.get_consent(PATIENT)))
    assert callers.audit() == [("call GetConsent:1", "denied", "unidentified")]


@pytest.mark.parametrize("forwarded", [False, True], ids=["in the handshake", "forwarded"])
def test_a_certificate_of_the_ca_whose_hsa_id_holds_a_nul_identifies_nobody(
    callers: Callers, forwarded: bool
) -> None:
    # A NUL once reached the audit record's insert, which failed; every call was a server error.
    issued = callers.pki.clients["nul_in_hsa_id"]
    if forwarded:
        callers.tls.peer = PROXY
        callers.client.headers["ssl-client-cert"] = issued.forwarded

    reply = callers.as_(None if forwarded else "nul_in_hsa_id").call("GetConsent", 1, s.get_consent(PATIENT))

    assert_refused(reply)
    assert callers.audit() == [("call GetConsent:1", "denied", "unidentified")]


def test_a_trusted_proxy_that_forwards_no_certificate_identifies_nobody(callers: Callers) -> None:
    callers.tls.peer = PROXY

    assert_refused(callers.as_(None).call("GetConsent", 1, s.get_consent(PATIENT)))


def test_behind_a_trusted_proxy_its_own_tls_certificate_names_no_caller(callers: Callers) -> None:
    # The proxy's connection may carry its own certificate: the caller is the one it forwards.
    callers.tls.peer = PROXY

    assert_refused(callers.as_("portal").call("GetConsent", 1, s.get_consent(PATIENT)))


@pytest.mark.one_engine("a WSDL is static but for the address a trusted proxy's headers give: no operation")
@pytest.mark.parametrize(
    "served_at",
    ["{path}?wsdl", "/contracts/interactions/GetCertificate_2/GetCertificateInteraction_2.wsdl"],
    ids=["endpoint", "file"],
)
@pytest.mark.parametrize("peer", [PROXY, "192.0.2.10"], ids=["trusted proxy", "anyone else"])
def test_only_a_trusted_proxy_tells_the_wsdls_public_address(
    callers: Callers, peer: str, served_at: str
) -> None:
    callers.tls.peer = peer
    path = s.path_of("GetCertificate", 2)
    forwarded = {
        "x-forwarded-proto": "https",
        "x-forwarded-host": "intyg.example.se",
        "x-forwarded-prefix": "/intyg",
    }

    served = callers.client.get(served_at.format(path=path), headers=forwarded).text

    public = f'location="https://intyg.example.se/intyg{path}"'
    assert (public in served) is (peer == PROXY)
    assert "example.se" in served or f'location="http://testserver{path}"' in served
    # The prefix goes into the address only: the imports are relative, whoever tells the prefix.
    assert "/intyg/" not in served.replace(public, "")


@pytest.mark.one_engine("a WSDL is static but for the address a trusted proxy's headers give: no operation")
@pytest.mark.parametrize(
    "forwarded",
    [
        {"x-forwarded-proto": "javascript", "x-forwarded-host": "intyg.example.se"},
        {"x-forwarded-proto": "https", "x-forwarded-host": "intyg.example.se/evil"},
        {"x-forwarded-proto": "https", "x-forwarded-host": "intyg.example.se", "x-forwarded-prefix": "evil"},
        {"x-forwarded-proto": "https", "x-forwarded-host": "intyg.example.se", "x-forwarded-prefix": '/"x'},
        {"x-forwarded-proto": "https"},
    ],
    ids=["no http scheme", "a path in the host", "a prefix without /", "a quote in the prefix", "no host"],
)
def test_a_trusted_proxys_address_that_is_no_scheme_host_and_prefix_is_not_used(
    callers: Callers, forwarded: dict[str, str]
) -> None:
    callers.tls.peer = PROXY
    path = s.path_of("GetCertificate", 2)

    served = callers.client.get(f"{path}?wsdl", headers=forwarded).text

    assert "example.se" not in served
    assert f'location="http://testserver{path}"' in served


# --- Operations and logical addresses -----------------------------------------------------------------


def test_a_system_may_not_call_an_operation_its_entry_does_not_name(callers: Callers) -> None:
    # The portal's entry names citizen operations; registering is a care system's.
    assert_refused(register_for(callers.as_("portal"), "c-portal"))
    # Webcert may call GetCertificate 2 only, not the 2013 citizen contract GetCertificate 1.
    legacy = (
        '<r:GetCertificateRequest xmlns:r="urn:riv:insuranceprocess:healthreporting:GetCertificateResponder:1">'
        f"<r:certificateId>c-1</r:certificateId><r:nationalIdentityNumber>{PATIENT}</r:nationalIdentityNumber>"
        "</r:GetCertificateRequest>"
    )
    assert_refused(callers.as_("webcert").call("GetCertificate", 1, legacy))

    assert callers.audit() == [
        ("call RegisterCertificate:3", "denied", PORTAL),
        ("call GetCertificate:1", "denied", WEBCERT),
    ]


def test_a_system_may_not_call_a_logical_address_its_entry_does_not_name(callers: Callers) -> None:
    journal = callers.as_("journal")
    body = s.list_for_care(PATIENT, care_giver=GIVER_B)

    assert_refused(journal.call("ListCertificatesForCare", 3, body, address=GIVER_A))
    assert not journal.call("ListCertificatesForCare", 3, body, address=GIVER_B).is_fault

    assert callers.audit() == [("call ListCertificatesForCare:3", "denied", JOURNAL), ("list", "ok", JOURNAL)]


@pytest.mark.shared
def test_a_system_limited_to_one_care_giver_cannot_act_for_a_citizen_of_another(callers: Callers) -> None:
    # A certificate of care giver A kept only for the citizen's consent (rule 5), which a
    # withdrawal would delete (rule 6). The journal system of care giver B is granted no consent
    # contract (the table allows none to it), and acting as the citizen through the mixed contracts
    # (part INVANA) is refused and audited.
    assert register_for(callers.as_("webcert"), "c-a").result()[0] == "OK"
    portal = callers.as_("portal")
    assert portal.call("SetConsent", 1, s.set_consent(PATIENT, True)).result()[0] == "OK"
    webcert = callers.as_("webcert")
    removed = webcert.call("RemoveCertificateForCare", 1, s.remove_for_care("c-a", care_giver=GIVER_A))
    assert removed.result()[0] == "OK"
    journal = callers.as_("journal")

    assert_refused(journal.call("SetConsent", 1, s.set_consent(PATIENT, False), address=GIVER_B))
    assert_refused(journal.call("GetCertificate", 2, s.get_certificate("c-a", "INVANA"), address=GIVER_B))
    assert_refused(
        journal.call("SetCertificateStatus", 2, s.set_status("c-a", "INVANA", "DELETE"), address=GIVER_B)
    )

    denied = [(action, actor) for action, outcome, actor in callers.audit() if outcome == "denied"]
    assert denied == [("call SetConsent:1", JOURNAL), ("read", JOURNAL), ("archive", JOURNAL)]
    read = callers.as_("portal").call("GetCertificate", 2, s.get_certificate("c-a", "INVANA"))
    assert s.statuses(read) == [("HSVARD", "RECEIV")], "kept for the citizen, unarchived"


# --- SendCertificateToRecipient 2 and recipients: an operation of its own, and each recipient its own part --


def test_a_system_not_granted_send_certificate_to_recipient_is_refused_and_audited(callers: Callers) -> None:
    webcert = callers.as_("webcert")
    assert register_for(webcert, "c-a").result()[0] == "OK"

    assert_refused(
        webcert.call("SendCertificateToRecipient", 2, s.send_to_recipient("c-a", "FKASSA", PATIENT))
    )

    assert callers.audit() == [
        ("register", "ok", WEBCERT),
        ("call SendCertificateToRecipient:2", "denied", WEBCERT),
    ]
    assert ("HSVARD", "SENTTO") not in s.statuses(
        webcert.call("GetCertificate", 2, s.get_certificate("c-a", "HSVARD"))
    )


def test_a_care_system_sends_its_care_givers_certificate_and_another_care_givers_is_answered_as_unknown(
    callers: Callers,
) -> None:
    assert register_for(callers.as_("webcert"), "c-a").result()[0] == "OK"
    journal = callers.as_("journal")
    assert register_for(journal, "c-b", care_giver=GIVER_B).result()[0] == "OK"

    def send(certificate_id: str) -> Reply:
        body = s.send_to_recipient(certificate_id, "FKASSA", PATIENT, care_giver=GIVER_B)
        return journal.call("SendCertificateToRecipient", 2, body, address=GIVER_B)

    assert send("c-b").result() == ("OK", None, None)
    assert send("c-a").result() == send("c-unknown").result()
    assert send("c-a").result()[0::2] == ("ERROR", "APPLICATION_ERROR")
    assert [(a, o) for a, o, _ in callers.audit()][-4:] == [
        ("send", "ok"),
        ("send", "denied"),
        ("send", "error"),
        ("send", "denied"),
    ]


def test_a_recipient_reads_and_sets_statuses_as_its_own_part_only_and_care_never_as_a_recipient(
    callers: Callers,
) -> None:
    journal = callers.as_("journal")
    assert register_for(journal, "c-b", care_giver=GIVER_B).result()[0] == "OK"
    send = s.send_to_recipient("c-b", "FKASSA", PATIENT, care_giver=GIVER_B)
    assert journal.call("SendCertificateToRecipient", 2, send, address=GIVER_B).result()[0] == "OK"

    fkassa = callers.as_("fkassa")
    assert not fkassa.call("GetCertificate", 2, s.get_certificate("c-b", "FKASSA")).is_fault
    assert fkassa.call("SetCertificateStatus", 2, s.set_status("c-b", "FKASSA", "RECEIV")).result()[0] == "OK"
    for part in ("TRANSP", "HSVARD", "INVANA"):
        assert_refused(fkassa.call("GetCertificate", 2, s.get_certificate("c-b", part)))
    assert_refused(fkassa.call("SetCertificateStatus", 2, s.set_status("c-b", "TRANSP", "RECEIV")))
    # A care system reads as care, never as a recipient, even one its certificate was sent to.
    assert_refused(
        callers.as_("journal").call("GetCertificate", 2, s.get_certificate("c-b", "FKASSA"), address=GIVER_B)
    )

    assert [(a, o, i) for a, o, i in callers.audit()][-7:] == [
        ("read", "ok", FORSAKRINGSKASSAN),
        ("set_status", "ok", FORSAKRINGSKASSAN),
        ("read", "denied", FORSAKRINGSKASSAN),
        ("read", "denied", FORSAKRINGSKASSAN),
        ("read", "denied", FORSAKRINGSKASSAN),
        ("set_status", "denied", FORSAKRINGSKASSAN),
        ("read", "denied", JOURNAL),
    ]


# --- Care givers: a system never reads, lists or removes another care giver's certificates ------------------


@pytest.mark.shared
def test_a_care_system_cannot_register_a_certificate_of_a_care_giver_outside_its_permissions(
    callers: Callers,
) -> None:
    reply = register_for(callers.as_("webcert"), "c-b", care_giver=GIVER_B)

    assert_refused(reply)
    assert callers.audit() == [("register", "denied", WEBCERT)]
    assert (
        callers.as_("journal")
        .call("GetCertificate", 2, s.get_certificate("c-b", "HSVARD"), address=GIVER_B)
        .is_fault
    )


@pytest.mark.shared
def test_another_care_givers_certificate_is_answered_as_unknown_and_left_out_of_lists(
    callers: Callers,
) -> None:
    assert register_for(callers.as_("webcert"), "c-a").result()[0] == "OK"
    journal = callers.as_("journal")

    def call(operation: str, major: int, body: str) -> Reply:
        return journal.call(operation, major, body, address=GIVER_B)

    unknown = call("GetCertificate", 2, s.get_certificate("no-such-id", "HSVARD"))
    got = call("GetCertificate", 2, s.get_certificate("c-a", "HSVARD"))
    assert (got.fault_code, got.fault_string) == (unknown.fault_code, unknown.fault_string)
    assert got.fault_string == "Certificate not found"

    listed = call("ListCertificatesForCare", 3, s.list_for_care(PATIENT, care_giver=GIVER_A))
    assert s.listed_ids(listed) == []
    # Naming its own care giver as the remover does not let it remove another's certificate.
    for giver in (GIVER_A, GIVER_B):
        removed = call("RemoveCertificateForCare", 1, s.remove_for_care("c-a", care_giver=giver))
        assert removed.result() == ("ERROR", "Certificate not found", "APPLICATION_ERROR")
    revoke = at_address(
        s.peer_request("revokecertificate", **{"data.intygsId": "c-a", "data.personId": PATIENT}), GIVER_B
    )
    revoked = journal.post(s.path_of("RevokeCertificate", 2), revoke)
    assert revoked.result() == ("ERROR", "Certificate not found", "APPLICATION_ERROR")

    # Its own care giver's system still sees it, unchanged.
    webcert = callers.as_("webcert")
    assert s.listed_ids(
        webcert.call("ListCertificatesForCare", 3, s.list_for_care(PATIENT, care_giver=GIVER_A))
    ) == ["c-a"]
    assert s.statuses(webcert.call("GetCertificate", 2, s.get_certificate("c-a", "HSVARD"))) == [
        ("HSVARD", "RECEIV")
    ]
    denied = [(action, actor) for action, outcome, actor in callers.audit() if outcome == "denied"]
    assert denied == [
        ("read", JOURNAL),
        ("remove_care_copy", JOURNAL),
        ("remove_care_copy", JOURNAL),
        ("revoke", JOURNAL),
    ]


@pytest.mark.shared
def test_registering_an_id_another_care_giver_holds_is_denied_with_one_answer_whichever_patient(
    callers: Callers,
) -> None:
    assert register_for(callers.as_("webcert"), "c-a").result()[0] == "OK"
    before = etree.tostring(
        callers.as_("webcert").call("GetCertificate", 2, s.get_certificate("c-a", "HSVARD")).body
    )
    journal = callers.as_("journal")

    same_patient = register_for(journal, "c-a", care_giver=GIVER_B)
    other_patient = register_for(journal, "c-a", care_giver=GIVER_B, patient="194404041230")

    expected = ("ERROR", "Certificate id already used by another care giver", "VALIDATION_ERROR")
    assert same_patient.result() == other_patient.result() == expected
    assert callers.audit()[2:] == [("register", "denied", JOURNAL), ("register", "denied", JOURNAL)]
    after = etree.tostring(
        callers.as_("webcert").call("GetCertificate", 2, s.get_certificate("c-a", "HSVARD")).body
    )
    assert after == before


@pytest.mark.shared
def test_another_care_givers_certificate_is_counted_and_logged_as_an_unknown_id(callers: Callers) -> None:
    """The metrics and the request log (README "Callers") tell the two apart no more than the answer does;
    only the audit trail says the call was refused (denied, NotPermitted)."""
    assert register_for(callers.as_("webcert"), "c-a").result()[0] == "OK"
    journal = callers.as_("journal")
    revoke = s.peer_request("revokecertificate", **{"data.intygsId": "ID", "data.personId": PATIENT})
    calls = [
        # A contract without a result (a fault), and two with one (ERROR in the result).
        lambda certificate_id: journal.call(
            "GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD"), address=GIVER_B
        ),
        lambda certificate_id: journal.call(
            "RemoveCertificateForCare",
            1,
            s.remove_for_care(certificate_id, care_giver=GIVER_B),
            address=GIVER_B,
        ),
        lambda certificate_id: journal.post(
            s.path_of("RevokeCertificate", 2), at_address(revoke.replace("ID", certificate_id), GIVER_B)
        ),
    ]
    for call in calls:
        with observed() as unknown:
            call("no-such-id")
        with observed() as foreign:
            call("c-a")

        assert foreign.counted == unknown.counted
        assert foreign.logged == unknown.logged
        assert len(foreign.logged) == 1
    engine = create_engine(callers.database_url.replace("sqlite+aiosqlite", "sqlite"))
    try:
        with engine.connect() as connection:
            refused = connection.execute(
                select(audit_records.c.action, audit_records.c.outcome, audit_records.c.reason).where(
                    audit_records.c.actor_id == JOURNAL
                )
            ).all()
    finally:
        engine.dispose()
    assert sorted(map(tuple, refused)) == sorted(
        [
            ("read", "error", "CertificateNotFound"),
            ("read", "denied", "NotPermitted"),
            ("remove_care_copy", "error", "CertificateNotFound"),
            ("remove_care_copy", "denied", "NotPermitted"),
            ("revoke", "error", "CertificateNotFound"),
            ("revoke", "denied", "NotPermitted"),
        ]
    )


@pytest.mark.shared
def test_a_system_allowed_every_care_giver_sees_them_all(callers: Callers) -> None:
    assert register_for(callers.as_("webcert"), "c-a").result()[0] == "OK"
    assert register_for(callers.as_("journal"), "c-b", care_giver=GIVER_B).result()[0] == "OK"
    portal = callers.as_("portal")
    assert portal.call("SetConsent", 1, s.set_consent(PATIENT, True)).result()[0] == "OK"

    listed = portal.call("ListCertificatesForCitizen", 4, s.list_for_citizen(PATIENT))

    assert sorted(s.listed_ids(listed)) == ["c-a", "c-b"]
