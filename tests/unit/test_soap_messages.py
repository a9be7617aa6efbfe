"""GetCertificate 2 answers by splicing bytes: ``messages.document_of`` frames the registered document
with its layout, and ``messages.intyg_envelope`` writes the response around the stored bytes without
parsing them. Every peer certificate is answered as the tree built from the parsed document answers it
(``intyg_from_document``, still used for documents stored before layouts), compared as canonical XML.

The same answers through SOAP, checked against the reference XSDs, are in
tests/integration/test_peer_requests.py and test_soap_operations.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from copy import deepcopy
from typing import Any

import pytest
from lxml import etree

from service import document
from service.model import (
    Certificate,
    Party,
    PersonId,
    Relation,
    RelationKind,
    StaffId,
    StatusCode,
    StatusEvent,
)
from service.soap import messages as m
from service.soap.contracts import GET_CERTIFICATE_2
from tests.fakes import a_certificate
from tests.reference import assert_valid_everywhere, need_shared, parser, peer_requests

pytestmark = pytest.mark.shared

RECEIVED = StatusEvent(StatusCode.RECEIV, Party.HSVARD, dt.datetime(2024, 5, 2, 10, 1))
SENT = StatusEvent(StatusCode.SENTTO, Party.FKASSA, dt.datetime(2024, 5, 3, 8, 0))
ARCHIVED = StatusEvent(StatusCode.DELETE, Party.INVANA, dt.datetime(2024, 5, 4, 9, 30))
HISTORIES = {"none": [], "one": [RECEIVED], "several": [RECEIVED, SENT, ARCHIVED]}


def registered() -> list[Any]:
    """The ``intyg`` of every RegisterCertificate peer request, by its template's label."""
    chosen = [p for p in peer_requests() if p.id is not None and p.id.startswith("register/")]
    return chosen or [pytest.param(None, None, id="peer-requests-absent")]


def intyg_of(envelope: str) -> etree._Element:
    body = m.parse_envelope(envelope.encode()).body
    intyg = body.find(m.q(etree.QName(body).namespace or "", "intyg"))
    assert intyg is not None
    return intyg


def answer(stored: bytes, events: list[StatusEvent]) -> etree._Element:
    """The GetCertificateResponse element of the envelope the service writes for a stored document."""
    contract = GET_CERTIFICATE_2
    data = m.intyg_envelope(contract.response, contract.namespace, stored, events)
    body = etree.fromstring(data, parser()).find(m.q(m.SOAP_ENV, "Body"))
    assert body is not None
    return body[0]


def tree_built(stored: bytes, events: list[StatusEvent]) -> etree._Element:
    """The response as GetCertificate built it before layouts: the parsed document, rebuilt."""
    response = GET_CERTIFICATE_2.response()
    name = m.q(GET_CERTIFICATE_2.namespace, "intyg")
    response.append(m.intyg_from_document(document.content(stored), name, events))
    return etree.fromstring(m.envelope(response), parser())[1][0]


def canonical(element: etree._Element) -> str:
    # C14N 2.0 with prefixes rewritten: the tree path declares the core 3 namespace under generated
    # prefixes on each child, the splice keeps the document's own declarations; the names, attributes,
    # text and comments are what must not differ.
    text = etree.tostring(element).decode()
    return str(etree.canonicalize(text, with_comments=True, rewrite_prefixes=True))


def status_codes(response: etree._Element) -> list[str]:
    """The status codes of the answered certificate's history, in order."""
    own = response[0].iterchildren(m.q(document.CORE3, "status"))
    return [m.text(s, m.q(document.CORE3, "status"), m.q(m.TYPES3, "code")) for s in own]


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize(("path", "envelope"), registered())
def test_a_get_splices_the_certificate_the_tree_path_built_for_every_peer_certificate(
    path: Any, envelope: str | None, history: str
) -> None:
    need_shared()
    assert envelope is not None
    events = HISTORIES[history]
    stored = m.document_of(intyg_of(envelope))

    spliced = answer(stored, events)

    assert document.unframed(stored)[1] is not None
    assert canonical(spliced) == canonical(tree_built(stored, events))
    assert_valid_everywhere(spliced)
    assert status_codes(spliced) == [e.code.value for e in events]


def test_a_documents_own_status_elements_give_way_to_the_status_history_now() -> None:
    need_shared()
    [template] = [p.values[1] for p in registered() if p.id == "register/request_lisjp:request"]
    intyg = intyg_of(template)
    first_answer = intyg.find(m.q(document.CORE3, "svar"))
    assert first_answer is not None
    for event in (SENT, ARCHIVED):
        own = m.status_element(event)
        own.tail = "\n    "
        first_answer.addprevious(own)
    first_answer.addprevious(etree.Comment(" kept, as the tree path keeps it "))
    stored = m.document_of(intyg)

    spliced = answer(stored, [RECEIVED])

    assert canonical(spliced) == canonical(tree_built(stored, [RECEIVED]))
    assert_valid_everywhere(spliced)
    assert status_codes(spliced) == ["RECEIV"]


def test_a_document_declaring_the_responses_prefix_is_answered_under_another() -> None:
    need_shared()
    [template] = [p.values[1] for p in registered() if p.id == "register/request_luse:request"]
    original = intyg_of(template)
    # The same certificate, its core 3 elements under the prefix ``ns`` the response element uses.
    intyg = etree.Element(original.tag, nsmap={"ns": document.CORE3, "t": m.TYPES3})
    intyg.text = original.text
    intyg.extend(deepcopy(list(original)))
    stored = m.document_of(intyg)
    assert b"<ns:intygs-id>" in document.content(stored)

    spliced = answer(stored, [RECEIVED, SENT])

    # The tree path is no reference here: lxml writes its intyg as ``ns:intyg`` beside the document's
    # own ``xmlns:ns``, which names another element. The answer is the one for the usual prefixes.
    assert spliced[0].tag == m.q(GET_CERTIFICATE_2.namespace, "intyg")
    assert canonical(spliced) == canonical(answer(m.document_of(original), [RECEIVED, SENT]))
    assert_valid_everywhere(spliced)


def test_the_stored_document_is_the_registered_intyg_and_a_bare_one_is_still_answered() -> None:
    need_shared()
    [template] = [p.values[1] for p in registered() if p.id == "register/request_luaena:request"]
    intyg = intyg_of(template)
    bare = etree.tostring(intyg, encoding="UTF-8")

    stored = m.document_of(intyg)

    # As registered, but for the whitespace after the element, which is no part of it.
    assert document.content(stored) == bare.rstrip()
    assert document.unframed(bare) == (bare, None)
    assert etree.QName(document.parse(stored)).localname == "intyg"
    assert canonical(answer(bare, [RECEIVED])) == canonical(answer(stored, [RECEIVED]))


@pytest.mark.parametrize(("path", "envelope"), registered())
def test_the_framed_answers_are_those_of_the_document_for_every_peer_certificate(
    path: Any, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    intyg = intyg_of(envelope)
    stored = m.document_of(intyg)
    frame = document.unframed(stored)[1]
    assert frame is not None

    from_document = document.answers(etree.tostring(intyg))

    assert frame.answers == from_document
    assert document.answers(stored) == from_document
    assert from_document, "every peer certificate has answers"


def test_a_document_framed_before_answers_were_is_answered_from_the_document() -> None:
    need_shared()
    [template] = [p.values[1] for p in registered() if p.id == "register/request_lisjp:request"]
    stored = m.document_of(intyg_of(template))
    content, frame = document.unframed(stored)
    assert frame is not None
    layout = frame.layout
    # A version 1 frame, as stored before answers were framed: the layout alone.
    header = [layout.prefix, layout.declarations, layout.before, layout.after]
    version_1 = b"\x00layout:1\n" + json.dumps(header).encode() + b"\n" + content

    assert document.unframed(version_1) == (content, document.Frame(layout, None))
    assert document.answers(version_1) == document.answers(stored)
    assert canonical(answer(version_1, [RECEIVED])) == canonical(answer(stored, [RECEIVED]))


def template(label: str) -> str:
    [found] = [p.values[1] for p in registered() if p.id == f"register/{label}"]
    return str(found)


def test_a_sick_leave_is_valid_from_its_first_to_its_last_day_and_a_luse_the_day_it_was_signed() -> None:
    need_shared()
    lisjp = m.certificate_from_intyg(intyg_of(template("request_lisjp:request")))
    luse = m.certificate_from_intyg(intyg_of(template("request_luse:request")))

    # Three periods, 2015-12-07..10, 12..14 and 15..20; signed 2015-12-07T15:48:05.
    assert (lisjp.valid_from, lisjp.valid_to) == (dt.date(2015, 12, 7), dt.date(2015, 12, 20))
    assert luse.signed_at is not None
    assert (luse.valid_from, luse.valid_to) == (luse.signed_at.date(), luse.signed_at.date())
    assert lisjp.relations == luse.relations == ()


def test_the_relation_a_peer_request_states_is_read() -> None:
    need_shared()
    issued = m.certificate_from_intyg(intyg_of(template("request_lisjp:requestParameterizedActiveSickLeave")))

    # tests/reference.py renders the relation fragment with these values.
    assert issued.relations == (
        Relation(RelationKind.REPLACES, "5a0c0e3a-3b0b-4a4a-8f3c-aaaaaaaaaaaa", "TSTNMT2321000156-1077"),
    )


def test_a_get_answers_the_relations_others_state_after_its_intyg_spliced_or_built() -> None:
    need_shared()
    intyg = intyg_of(template("request_lisjp:request"))
    issued = m.certificate_from_intyg(intyg)
    certificate = Certificate(
        **{f.name: getattr(issued, f.name) for f in dataclasses.fields(issued)},
        registered_at=dt.datetime(2024, 5, 2, 10, 1),
        related_by=(Relation(RelationKind.REPLACES, "newer", "SE2321000016-H489"),),
    )
    contract, bare = GET_CERTIFICATE_2, etree.tostring(intyg, encoding="UTF-8")

    def get(stored: bytes) -> etree._Element:
        data = m.intyg_envelope(
            contract.response,
            contract.namespace,
            stored,
            [RECEIVED],
            after=m.related_by_elements(certificate),
        )
        body = etree.fromstring(data, parser()).find(m.q(m.SOAP_ENV, "Body"))
        assert body is not None
        return body[0]

    spliced, built = get(m.document_of(intyg)), get(bare)

    assert canonical(spliced) == canonical(built)
    assert_valid_everywhere(spliced)
    [relation] = spliced.findall(m.q(m.OWN_CORE1, "relation"))
    ids = [m.text(e, m.q(m.TYPES3, "extension")) for e in relation if "intygs-id" in e.tag]
    assert ids == ["newer", issued.id]  # "newer" replaces this one


def test_the_care_meta_of_2013_says_the_validity_where_its_date_type_can_hold_it() -> None:
    def meta(first: dt.date, last: dt.date) -> dict[str, str]:
        parent = etree.Element("parent")
        m.meta1(parent, "urn:example", a_certificate(valid_from=first, valid_to=last))
        return {etree.QName(e).localname: e.text or "" for e in parent[0] if "valid" in e.tag}

    assert meta(dt.date(2015, 12, 7), dt.date(2015, 12, 20)) == {
        "validFrom": "2015-12-07",
        "validTo": "2015-12-20",
    }
    # core 1 Datum: years 1000 to 2999; the elements are optional.
    assert meta(dt.date(999, 12, 31), dt.date(3000, 1, 1)) == {}


@pytest.mark.parametrize("party", Party)
@pytest.mark.parametrize("code", StatusCode)
def test_an_events_spliced_bytes_are_its_status_element_serialised(party: Party, code: StatusCode) -> None:
    event = StatusEvent(code, party, dt.datetime(2024, 12, 31, 23, 59, 58))

    assert m.status_bytes(event) == etree.tostring(m.status_element(event), encoding="UTF-8")


@pytest.mark.parametrize(
    ("root", "extension", "named"),
    [
        ("1.2.752.129.2.1.4.1", "SE2321000016-DOC1", StaffId("SE2321000016-DOC1")),
        (m.PERSONNUMMER_ROOT, "191212121212", PersonId.parse("191212121212")),
        (m.SAMORDNINGSNUMMER_ROOT, "197010632391", PersonId.parse("197010632391")),
    ],
    ids=["hsa id", "personnummer", "samordningsnummer"],
)
def test_a_professional_is_typed_by_the_root_of_their_id(root: str, extension: str, named: object) -> None:
    author = etree.fromstring(
        f'<a xmlns:t="{m.TYPES3}"><t:root>{root}</t:root><t:extension>{extension}</t:extension></a>'
    )

    assert m.professional(author) == named
