"""Fuzzing, bounded: the SOAP message parser and personal identity number validation never fail in
any way but their own refusal, whatever arrives (issue "Security", Input). The end-to-end version
through the app is tests/integration/test_soap_robustness.py; this one generates the input.
"""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from service import errors
from service.model import PersonId
from service.soap import messages

ENVELOPE = messages.SOAP_ENV

# XML-ish fragments, so that generated input reaches the parser's deeper paths, not only its first byte.
_PIECES = st.sampled_from(
    [
        f'<e:Envelope xmlns:e="{ENVELOPE}">',
        "</e:Envelope>",
        "<e:Header>",
        "</e:Header>",
        "<e:Body>",
        "</e:Body>",
        '<r:X xmlns:r="urn:x">',
        "</r:X>",
        "<!DOCTYPE x [<!ENTITY a 'aaaa'>]>",
        "&a;",
        '<!ENTITY b SYSTEM "file:///etc/passwd">',
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "<?xml version='1.0'?>",
        "text",
        "\x00",
        "é",
    ]
)
XMLISH = st.lists(_PIECES, max_size=40).map("".join).map(str.encode)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(st.binary(max_size=2000), XMLISH))
def test_the_envelope_parser_answers_with_an_envelope_or_its_own_refusal(data: bytes) -> None:
    started = time.perf_counter()
    try:
        envelope = messages.parse_envelope(data)
    except messages.MalformedMessage:
        pass
    else:
        assert envelope.body.tag != f"{{{ENVELOPE}}}Body"
    assert time.perf_counter() - started < 1.0


@settings(max_examples=1000, deadline=None)
@given(raw=st.one_of(st.text(max_size=20), st.from_regex(r"(19|20)\d{6}[-+]?\d{4}", fullmatch=True)))
def test_personal_identity_numbers_are_valid_or_refused_never_anything_else(raw: str) -> None:
    try:
        parsed = PersonId.parse(raw)
    except errors.InvalidPersonId:
        return
    assert len(parsed.value) == 12 and parsed.value.isdigit()
    assert PersonId.parse(parsed.value) == parsed
