"""The certificate types the service stores: each type's code, name, major versions, who may see it,
which recipients may receive it and how its validity period is read. Data, no I/O.

The types and versions are the national ones whose business rules are published (the Schematron rule
set of sklintyg/schemas, README.md "Certificate types"); a certificate of another type or version is
refused at register. A type's code is what RegisterCertificate 3 names in ``intyg/typ/code``, its major
version the number before the first dot of ``intyg/version``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from service.model import Party


class Validity(enum.Enum):
    """How a type's validity period is read, once, at register (``document.validity``). A period is the
    ``tp:datePeriod`` (``start``, ``end``) of one part of an answer that may be given more than once: the
    validity runs from the earliest start to the latest end. The answer ids are those of the type's
    Schematron rules (README.md, "Validity and relations")."""

    SIGNED = "signed"  # the signing date: the type states no period
    SICK_LEAVE = "sick_leave"  # the sick-leave periods, svar 32 / delsvar 32.2 (1 to 4 of them)
    AG114_PERIOD = "ag114_period"  # AG1-14's period of reduced working capacity, svar 7 / delsvar 7.2
    # AF00251's periods of sick absence from the programme, svar 6 / delsvar 6.2 (0 to 4 of them)
    AF00251_PERIOD = "af00251_period"

    @property
    def answer(self) -> tuple[str, str] | None:
        """The ids of the answer (``svar``) and of its part (``delsvar``) that state the period."""
        return _PERIOD_ANSWERS.get(self)


_PERIOD_ANSWERS: Final = {
    Validity.SICK_LEAVE: ("32", "32.2"),
    Validity.AG114_PERIOD: ("7", "7.2"),
    Validity.AF00251_PERIOD: ("6", "6.2"),
}


@dataclass(frozen=True, slots=True)
class CertificateType:
    code: str
    name: str
    major_versions: frozenset[int]
    # Whether the citizen may see it (REST, SOAP with part INVANA, the 2013 citizen contracts). A death
    # certificate concerns a deceased person: no citizen lists or reads it, care reads it as any other.
    citizen_sees: bool
    # The recipients a citizen, or a care system on the patient's behalf, may send it to.
    recipients: frozenset[Party]
    validity: Validity


def _type(
    code: str,
    name: str,
    versions: tuple[int, ...],
    recipients: tuple[Party, ...],
    validity: Validity = Validity.SIGNED,
    *,
    citizen_sees: bool = True,
) -> CertificateType:
    return CertificateType(code, name, frozenset(versions), citizen_sees, frozenset(recipients), validity)


TYPES: Final[Mapping[str, CertificateType]] = {
    t.code: t
    for t in (
        _type("AF00213", "Arbetsförmedlingens medicinska utlåtande", (1,), (Party.AF,)),
        _type(
            "AF00251",
            "Läkarintyg för deltagare i arbetsmarknadspolitiska program",
            (1,),
            (Party.AF,),
            Validity.AF00251_PERIOD,
        ),
        _type("AG1-14", "Läkarintyg om arbetsförmåga - sjuklöneperioden", (1,), (), Validity.AG114_PERIOD),
        _type("AG7804", "Läkarintyg om arbetsförmåga - arbetsgivaren", (1,), (), Validity.SICK_LEAVE),
        _type("DB", "Dödsbevis", (1,), (Party.SKV,), citizen_sees=False),
        _type("DOI", "Dödsorsaksintyg", (1,), (Party.SOS,), citizen_sees=False),
        _type("FK7263", "Läkarintyg för sjukpenning (FK 7263)", (1,), (Party.FKASSA,), Validity.SICK_LEAVE),
        _type("LISJP", "Läkarintyg för sjukpenning", (1,), (Party.FKASSA,), Validity.SICK_LEAVE),
        _type(
            "LUAE_FS",
            "Läkarutlåtande för aktivitetsersättning vid förlängd skolgång",
            (1,),
            (Party.FKASSA,),
        ),
        _type(
            "LUAE_NA",
            "Läkarutlåtande för aktivitetsersättning vid nedsatt arbetsförmåga",
            (1,),
            (Party.FKASSA,),
        ),
        _type("LUSE", "Läkarutlåtande för sjukersättning", (1,), (Party.FKASSA,)),
        _type(
            "TSTRK1007",
            "Läkarintyg för högre körkortsbehörigheter, taxiförarlegitimation och på begäran av Transportstyrelsen",
            (6, 7),
            (Party.TRANSP,),
        ),
        _type("TSTRK1009", "Läkares anmälan till Transportstyrelsen", (1,), (Party.TRANSP,)),
        _type(
            "TSTRK1031",
            "Läkarintyg diabetes avseende lämpligheten att inneha körkort m.m.",
            (3, 4),
            (Party.TRANSP,),
        ),
        _type(
            "TSTRK1062",
            "Läkarintyg avseende ADHD, autismspektrumtillstånd och likartade tillstånd samt psykisk "
            "utvecklingsstörning",
            (1,),
            (Party.TRANSP,),
        ),
    )
}
# The metrics' ``type`` label of a type code the table does not know. None is registered (an attempt is a
# refusal, counted by its reason): it keeps a value a caller chose from ever becoming a label.
OTHER: Final = "other"


def major_version(version: str) -> int | None:
    """The major version of a certificate's ``version`` ("1.3" is 1, "4.0" 4, "1" 1), or None."""
    head = version.strip().split(".", 1)[0]
    return int(head) if head.isascii() and head.isdigit() and len(head) <= 3 else None


def known(code: str, version: str) -> CertificateType | None:
    """The type a certificate of ``code`` and ``version`` is, if the service stores that type and version."""
    found = TYPES.get(code)
    if found is None or major_version(version) not in found.major_versions:
        return None
    return found


def label(code: str) -> str:
    """The metrics' ``type`` label of a type code: the code of a known type, else ``OTHER``."""
    return code if code in TYPES else OTHER


def require_sent_to(party: Party, codes: Iterable[str]) -> None:
    """A recipients file (INTYG_RECIPIENTS_FILE) agrees with the table: it gives ``party`` only types the
    table knows and sends to that party. Raises ValueError saying, in one line, which type does not."""
    for code in codes:
        found = TYPES.get(code)
        if found is None:
            raise ValueError(f"{party.value} is given {code[:40]!r}, which is not a type of the type table")
        if party not in found.recipients:
            sent = ", ".join(sorted(p.value for p in found.recipients))
            raise ValueError(
                f"{party.value} is given {code}, which the type table sends "
                + (f"to {sent} only" if sent else "to no recipient")
            )
