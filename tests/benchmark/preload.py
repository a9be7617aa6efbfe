"""Fills the store with many certificates, fast, written by the service's own code.

Each certificate is what RegisterCertificate 3 stores: a national-service register request rendered
for its id and patient, read by the SOAP adapter (``messages.certificate_from_intyg``, ``document_of``),
and given to the unit of work's ``certificates.add`` as ``operations.register_certificate`` gives it,
with its own data key, under the run's keys. Only the database round trips are bulk: ``add`` runs
against a stand-in session that keeps the rows it would insert, and those rows go to PostgreSQL many
at a time. No audit record is written for them: a get or list writes its own and never reads older
ones, so the 100k store is large where reads look (certificates, documents, status events).
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

from lxml import etree
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Insert

from service import rules
from service.soap import messages
from service.store.crypto import KeyRing
from service.store.unit_of_work import SqlUnitOfWork
from tests.integration import soap as s
from tests.reference import parser, with_check_digit

CARE_GIVERS = 10
PER_PATIENT = 4
_BATCH = 2000
_ID, _PATIENT = "PRELOAD-CERTIFICATE-ID", with_check_digit("19000101999")
_INTYG = f"{{{s.CP}:RegisterCertificateResponder:3}}intyg"


class _KeptRows:
    """Stands in for the engine and connection of a unit of work: keeps the rows the repository inserts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.rows: dict[Table, list[dict[str, Any]]] = {}
        self._engine = engine

    def connect(self) -> Any:
        """What the unit of work takes its connection from."""
        return self

    async def start(self) -> Any:
        return self

    @property
    def sync_engine(self) -> Any:
        """Where the unit of work looks for a pool of its own (it has none): runs on this fake."""
        return self

    @property
    def dialect(self) -> Any:
        """The repository picks its dialect's statements by it."""
        return self._engine.dialect

    async def execute(
        self, statement: Any, parameters: dict[str, Any] | list[dict[str, Any]]
    ) -> SimpleNamespace:
        if not isinstance(statement, Insert):
            raise RuntimeError(f"the preload sends inserts only, and add() now runs: {statement}")
        # Sent in bulk as plain inserts: the store is empty of these ids (add()'s "only if the id is
        # free" has nothing to find), and one row inserted is what add() is told.
        rows = self.rows.setdefault(cast(Table, statement.table), [])
        rows.extend(parameters if isinstance(parameters, list) else [parameters])
        return SimpleNamespace(rowcount=1)

    async def rollback(self) -> None:
        pass

    async def close(self) -> None:
        pass


def certificate_id(index: int) -> str:
    return f"preload-{index:07d}"


def person(index: int, day: int) -> str:
    """A valid personnummer: 90,000 distinct ones for each day of January 1910-1999."""
    return with_check_digit(f"19{10 + index % 90:02d}01{day:02d}{index // 90:03d}")


async def preload(engine: AsyncEngine, keyring: KeyRing, count: int, *, first_day: int = 10) -> None:
    """``count`` certificates, ``PER_PATIENT`` for each patient, of ``CARE_GIVERS`` care givers."""
    templates = [
        s.register_envelope(
            _ID, _PATIENT, care_giver=f"SE2321000016-PRE{k}", care_unit=f"SE2321000016-PREU{k}"
        )
        for k in range(CARE_GIVERS)
    ]
    now = dt.datetime.now().replace(microsecond=0)
    for start in range(0, count, _BATCH):
        kept = _KeptRows(engine)
        async with SqlUnitOfWork(cast(Any, kept), keyring) as uow:
            for index in range(start, min(start + _BATCH, count)):
                patient = index // PER_PATIENT
                envelope = templates[index % CARE_GIVERS].replace(_ID, certificate_id(index))
                envelope = envelope.replace(_PATIENT, person(patient % 90_000, first_day + patient // 90_000))
                intyg = next(etree.fromstring(envelope.encode(), parser()).iter(_INTYG))
                issued = messages.certificate_from_intyg(intyg)
                # As register_certificate stores a new certificate (rule 1).
                await uow.certificates.add(rules.registered(issued, now=now), messages.document_of(intyg))
        async with engine.begin() as connection:
            for table, rows in kept.rows.items():
                await connection.execute(insert(table), rows)
