"""Each certificate type's own business rules: the national Schematron rule set, compiled once per
process and applied to every RegisterCertificate 3 of the type (README.md, "Certificate types").

The rule set is the one the national service publishes, one file per type and major version
(sklintyg/schemas, ``intyg/clinicalprocess-healthcond-certificate-schematron/src/main/resources``):
ISO Schematron with XSLT 2 queries, compiled by ``schematron.py`` and run by Saxon (saxonche, SaxonC-HE),
the one maintained XSLT 2+ processor that runs inside a Python process. Which file is which type is
said here, in ``FILES``: the files never state it (``tests/unit/test_business_rules.py`` keeps the table
and ``certificate_type.TYPES`` in step).

Saxon is given only what the service parsed itself and wrote out again (``check`` takes text): its own
parser resolves external entities, so the request's bytes never reach it. A check is CPU work of a few
milliseconds that holds the GIL (saxonche does not release it), run off the event loop's own task by the
SOAP adapter, outside any transaction. The compiled rules take about 150 MB in each process.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from saxonche import PySaxonApiError, PySaxonProcessor

from service import certificate_type, schematron
from service.model import RuleFailure

# The national rule files and the type and major version each is for (None: every version; fk7263sit
# asserts its own type and no version). A type's code and major version are those of
# ``certificate_type``.
FILES: Final[Mapping[str, tuple[str, int | None]]] = {
    "af00213.v1.sch": ("AF00213", 1),
    "af00251.v1.sch": ("AF00251", 1),
    "ag114.v1.sch": ("AG1-14", 1),
    "ag7804.v1.sch": ("AG7804", 1),
    "db.v1.sch": ("DB", 1),
    "doi.v1.sch": ("DOI", 1),
    "fk7263sit.sch": ("FK7263", None),
    "lisjp.v1.sch": ("LISJP", 1),
    "luae_fs.v1.sch": ("LUAE_FS", 1),
    "luae_na.v1.sch": ("LUAE_NA", 1),
    "luse.v1.sch": ("LUSE", 1),
    "tstrk1007.v6.sch": ("TSTRK1007", 6),
    "tstrk1007.v7.sch": ("TSTRK1007", 7),
    "tstrk1009.v1.sch": ("TSTRK1009", 1),
    "tstrk1031.v3.sch": ("TSTRK1031", 3),
    "tstrk1031.v4.sch": ("TSTRK1031", 4),
    "tstrk1062.v1.sch": ("TSTRK1062", 1),
}

Key = tuple[str, int | None]

# A rule's message may quote values of the certificate (``value-of``). The national rules quote only
# constants, counts and the id of the answer their context names, none of which can be a personal
# identity number; a rule set of another release might, so a number of that shape, with or without
# century and separator, is masked before a message reaches an answer.
_PERSON_ID: Final = re.compile(r"(?<!\d)(?:\d{2})?\d{6}[-+]?\d{4}(?!\d)")
MASK: Final = "[personal identity number]"


class RuleSetUnusable(ValueError):
    """The configured rule set cannot be used: which file, and why, in one line."""


@functools.cache
def _processor() -> Any:
    """One Saxon processor per process (the open-source HE edition), made on first use: it holds the
    compiled stylesheets, and making it costs some 50 MB."""
    return PySaxonProcessor(license=False)


def _named(key: Key) -> str:
    """A rule set's file where it is a national one, else its type and version."""
    files = [name for name, known in FILES.items() if known == key]
    return files[0] if files else f"the rules of {key[0]} {key[1] or '(every version)'}"


def _masked(text: str) -> str:
    return _PERSON_ID.sub(MASK, text)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The compiled rules of each type and major version."""

    # Saxon's compiled stylesheets (saxonche has no type information).
    _executables: Mapping[Key, Any] = field(repr=False)

    @property
    def keys(self) -> frozenset[Key]:
        return frozenset(self._executables)

    @classmethod
    def of(cls, schemas: Mapping[Key, bytes]) -> RuleSet:
        """Compiles each Schematron schema, or ``schematron.UnsupportedSchematron`` / ``RuleSetUnusable``."""
        compiler = _processor().new_xslt30_processor()
        executables = {}
        for key, schema in schemas.items():
            try:
                executables[key] = compiler.compile_stylesheet(stylesheet_text=schematron.to_xslt(schema))
            except (schematron.UnsupportedSchematron, PySaxonApiError) as exc:
                raise RuleSetUnusable(f"{_named(key)}: {' '.join(str(exc).split())}") from None
        return cls(executables)

    def rules_for(self, type_code: str, version: str) -> Any | None:
        """The compiled rules of a type's major version, or of all its versions, or None."""
        found = self._executables.get((type_code, certificate_type.major_version(version)))
        return found if found is not None else self._executables.get((type_code, None))

    def check(self, certificate: str, *, type_code: str, version: str) -> tuple[RuleFailure, ...]:
        """How ``certificate`` (a RegisterCertificate 3 request element the service parsed and wrote out
        again) breaks the rules of its type and version, in the rule set's order; none where it follows
        them or its type has no rules here."""
        executable = self.rules_for(type_code, version)
        if executable is None:
            return ()
        try:
            document = _processor().parse_xml(xml_text=certificate)
            # A compiled stylesheet keeps state between runs, so each run has its own copy (a copy costs
            # under a microsecond).
            svrl = cast(str, executable.clone().transform_to_string(xdm_node=document))
        except PySaxonApiError:
            # An error the compiled stylesheet did not catch (schematron.py): its text may quote a value.
            return (RuleFailure("", "", "The certificate could not be checked against its type's rules"),)
        return tuple(
            RuleFailure(failure.pattern, failure.location, _masked(failure.message))
            for failure in schematron.failures(svrl)
        )


_compiling = threading.Lock()


@functools.cache
def _compiled(directory: Path) -> RuleSet:
    if not directory.is_dir():
        raise RuleSetUnusable(f"{directory} is not a directory")
    names = {path.name for path in directory.glob("*.sch")}
    if unknown := sorted(names - FILES.keys()):
        raise RuleSetUnusable(
            f"{directory} holds rule files this service does not know the type of: {', '.join(unknown)}"
        )
    if missing := sorted(FILES.keys() - names):
        raise RuleSetUnusable(f"{directory} lacks {', '.join(missing)}")
    return RuleSet.of({key: (directory / name).read_bytes() for name, key in FILES.items()})


def compiled(directory: Path) -> RuleSet:
    """The rule set in ``directory`` (every file of ``FILES``, and no other), compiled once per process:
    a second app of the same process (several in the tests) shares it rather than paying its memory
    again. ``RuleSetUnusable`` or ``OSError`` where it cannot be used."""
    with _compiling:
        return _compiled(directory.resolve())
