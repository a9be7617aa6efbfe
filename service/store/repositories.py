"""SQL repositories behind the Protocols of ``operations``. They never commit.

Reads are one statement each (README.md, "Benchmark"): a get loads the certificate with its status history and
relations, and with its document where the operation needs it (``get_with_document``); a list loads the
certificates with their histories and relations. The history comes as a correlated subquery aggregated to
one JSON array per certificate (``_rows_as_json``), so no second query and no join that repeats the
certificate's row per event; the relations as one array of the patient's (``_patient_relations``).
Hot statements are built once at import and take their values as execution parameters, so each is
compiled once and its cache key memoised; building inserts with ``.values(...)`` coerced every value (the
document too) on every call, about a fifth of a register's time in the profile behind
``tests/benchmark``.

Encryption at rest is theirs alone (``store/crypto.py``): ``add`` seals the document and the patient's
PIN under a fresh data key, the gets open them, and every patient is looked up by ``KeyRing.lookup``.
Lists take the patient from their argument and decrypt nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    Insert,
    Label,
    Row,
    Select,
    String,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from service import errors, rules
from service.model import (
    Action,
    AuditRecord,
    Caller,
    CallerKind,
    CareUnit,
    Certificate,
    CertificateWithDocument,
    Channel,
    Consent,
    Delivery,
    Outcome,
    Outgoing,
    Party,
    PersonId,
    Relation,
    RelationKind,
    StaffId,
    StatusCode,
    StatusEvent,
)
from service.store.crypto import (
    KeyRing,
    Purpose,
    WrappedKey,
    new_data_key,
    open_sealed,
    seal,
)
from service.store.statements import PsycopgStatements
from service.store.tables import (
    STATISTICS,
    audit_head,
    audit_records,
    certificate_relations,
    certificates,
    consent_changes,
    consents,
    documents,
    outbox,
    status_events,
)

log = logging.getLogger("service.store")


# What the repositories run statements on: SQLAlchemy's connection (SQLite, and what the command line
# and the tests open themselves), or psycopg's (PostgreSQL's request path, statements.py).
Connection = AsyncConnection | PsycopgStatements


class _rows_as_json(FunctionElement[Any]):
    """Each row of its arguments as a JSON array, all rows as one JSON array (an aggregate): the same
    result under the two engines' own names for it."""

    name = "rows_as_json"
    type = JSON()
    inherit_cache = True


@compiles(_rows_as_json, "postgresql")
def _rows_as_json_postgresql(element: _rows_as_json, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"


@compiles(_rows_as_json, "sqlite")
def _rows_as_json_sqlite(element: _rows_as_json, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


# A certificate's status history, one [id, code, party, at] per event; correlated to the certificate of
# the enclosing select. NULL (PostgreSQL) or [] (SQLite) where it has none.
_HISTORY = (
    select(_rows_as_json(status_events.c.id, status_events.c.code, status_events.c.party, status_events.c.at))
    .where(status_events.c.certificate_id == certificates.c.id)
    .scalar_subquery()
    .label("history")
)


def _patient_relations(patient_key: ColumnElement[str]) -> Label[Any]:
    """Every relation the certificates of the patient ``patient_key`` state, one [certificate_id, kind,
    related_id, related_root, certificate_root, registered_at, revoked] each (the last three the stating
    certificate's). A certificate's own relations, and those its patient's other certificates state of
    it, are among them (model.Certificate.related_by; another patient's certificate may name any id it
    likes, and is not read). Found by the index on patient_key, joining nothing, and sorted out to each
    certificate by ``_relations``: with a list's parameter it is one lookup for the whole list (one
    InitPlan on PostgreSQL), not one per certificate listed. A join here made PostgreSQL plan every list
    anew for small relation tables (a generic plan it estimated dearer than a custom one), about 0.2 ms
    each time."""
    return (
        select(
            _rows_as_json(
                certificate_relations.c.certificate_id,
                certificate_relations.c.kind,
                certificate_relations.c.related_id,
                certificate_relations.c.related_root,
                certificate_relations.c.certificate_root,
                certificate_relations.c.registered_at,
                certificate_relations.c.revoked,
            )
        )
        .where(certificate_relations.c.patient_key == patient_key)
        .scalar_subquery()
        .label("relations")
    )


# What lists and gets load of a certificate: its list fields, history and relations, not its ciphertexts.
_LISTED = [
    *(c for c in certificates.c if c.name not in ("patient_key", "patient_ciphertext", "wrapped_data_key")),
    _HISTORY,
]
_BY_ID = certificates.c.id == bindparam("certificate_id")
_BY_PATIENT: BindParameter[str] = bindparam("patient_key")
_GET = select(
    *_LISTED,
    _patient_relations(certificates.c.patient_key),
    certificates.c.patient_ciphertext,
    certificates.c.wrapped_data_key,
).where(_BY_ID)
# Locks the certificate's row only: the history and relations are subqueries, and the document is not read.
_GET_FOR_UPDATE = _GET.with_for_update()
# A certificate and its document are stored and deleted together, so the join finds both or neither.
_GET_WITH_DOCUMENT = _GET.add_columns(documents.c.ciphertext).join_from(
    certificates, documents, documents.c.certificate_id == certificates.c.id
)
_ADD_DOCUMENT = insert(documents)
_ADD_EVENT = insert(status_events)
_ADD_RELATION = insert(certificate_relations)
_SET_FLAGS = update(certificates).where(_BY_ID)
_SET_RELATIONS_REVOKED = update(certificate_relations).where(
    certificate_relations.c.certificate_id == bindparam("stating_id")
)
_CONSENT = select(consents.c.given, consents.c.changed_at).where(consents.c.patient_key == _BY_PATIENT)
_CONSENT_FOR_UPDATE = _CONSENT.with_for_update()
_CONSENT_FOR_SHARE = _CONSENT.with_for_update(read=True)
# The record's id is the table's own: not returned, nothing reads it back.
_ADD_AUDIT_RECORD = insert(audit_records).inline()
_ADD_OUTGOING = insert(outbox).inline()


@functools.cache
def _list_query(
    dialect: str, types: bool, care_units: bool, care_giver: bool, valid_from: bool, valid_to: bool
) -> Select[Any]:
    """A patient's certificates, filtered by what is given; one statement per combination, so each is
    compiled once. A filter by several values is ``= ANY(array)`` on PostgreSQL, where a list is one
    parameter; SQLite has no arrays, and SQLAlchemy expands ``IN`` there. A certificate without a
    validity is left out by a filter on it (its NULL compares as nothing)."""

    def among(column: Any, name: str) -> Any:
        if dialect == "postgresql":
            return column == func.any(bindparam(name, type_=postgresql.ARRAY(String())))
        return column.in_(bindparam(name, expanding=True))

    query = select(*_LISTED, _patient_relations(_BY_PATIENT)).where(certificates.c.patient_key == _BY_PATIENT)
    if types:
        query = query.where(among(certificates.c.type_code, "types"))
    if care_units:
        query = query.where(among(certificates.c.care_unit_id, "care_unit_ids"))
    if care_giver:
        query = query.where(certificates.c.care_giver_id == bindparam("care_giver_id"))
    if valid_from:
        query = query.where(certificates.c.valid_to >= bindparam("valid_from"))
    if valid_to:
        query = query.where(certificates.c.valid_from <= bindparam("valid_to"))
    return query.order_by(certificates.c.signed_at.desc().nulls_last(), certificates.c.id)


# Rule 1's "is the id taken?" and the insert are one statement: a taken id stores nothing, and a
# concurrent insert of the same id waits for the other transaction rather than failing on the key.
# The SQL is the same on both engines; SQLAlchemy has it only as a construct of each dialect. Its row
# count says which happened (SQLAlchemy reads an INSERT's only when asked to preserve it).
_ADD_IF_NEW: dict[str, Insert] = {
    "postgresql": postgresql.insert(certificates)
    .on_conflict_do_nothing(index_elements=[certificates.c.id])
    .execution_options(preserve_rowcount=True),
    "sqlite": sqlite.insert(certificates)
    .on_conflict_do_nothing(index_elements=[certificates.c.id])
    .execution_options(preserve_rowcount=True),
}


def _history(events: list[list[Any]] | None) -> tuple[StatusEvent, ...]:
    # Ordered by id here: SQLite's json_group_array keeps no order of its own, and an ORDER BY inside
    # an aggregate needs SQLite 3.44. The times come back as ISO text of the stored naive value (with
    # "T" from PostgreSQL, " " from SQLite); fromisoformat reads both, microseconds included.
    return tuple(
        StatusEvent(StatusCode(code), Party(party), dt.datetime.fromisoformat(at))
        for _, code, party, at in sorted(events or (), key=itemgetter(0))
    )


def _relations(certificate_id: str, found: list[list[Any]] | None) -> tuple[tuple[Relation, ...], ...]:
    """Of the patient's relations (``_patient_relations``), those the certificate states, by code and id
    (model.IssuedCertificate), and those its patient's other certificates not revoked state of it, in the
    order those were registered (their times as ISO text of one engine, which sorts), then by id."""
    stated, related_by = [], []
    for stating, kind, related, related_root, stating_root, registered_at, revoked in found or ():
        if stating == certificate_id:
            stated.append(Relation(RelationKind(kind), related, related_root))
        elif related == certificate_id and not revoked:
            related_by.append((registered_at, stating, Relation(RelationKind(kind), stating, stating_root)))
    return (
        tuple(sorted(stated, key=lambda r: (r.kind.value, r.certificate_id))),
        tuple(r for *_, r in sorted(related_by, key=lambda found: found[:2])),
    )


def _certificate(row: Row[*tuple[Any, ...]], patient: PersonId) -> Certificate:
    relations, related_by = _relations(row.id, row.relations)
    return Certificate(
        id=row.id,
        id_root=row.id_root,
        type_code=row.type_code,
        type_code_system=row.type_code_system,
        type_display_name=row.type_display_name,
        type_version=row.type_version,
        patient=patient,
        signed_at=row.signed_at,
        issuer_id=row.issuer_id,
        issuer_name=row.issuer_name,
        care_unit=CareUnit(
            unit_id=row.care_unit_id,
            unit_name=row.care_unit_name,
            workplace_code=row.workplace_code,
            care_giver_id=row.care_giver_id,
            care_giver_name=row.care_giver_name,
        ),
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        relations=relations,
        registered_at=row.registered_at,
        care_available=row.care_available,
        citizen_available=row.citizen_available,
        revoked=row.revoked,
        status_events=_history(row.history),
        related_by=related_by,
    )


def _unreadable(exc: errors.StoredDataUnreadable) -> errors.StoredDataUnreadable:
    # The operator's clue; the caller gets an internal error. Names no certificate (ids stay out of
    # logs) and no data: only what failed (integrity, or which KEK is missing).
    log.error("stored certificate unreadable: %s", exc)
    return exc


class SqlCertificateRepository:
    def __init__(self, connection: Connection, keyring: KeyRing) -> None:
        self.connection = connection
        self.keyring = keyring
        self._add_if_new = _ADD_IF_NEW[connection.dialect.name]

    def _data_key(self, certificate_id: str, row: Row[*tuple[Any, ...]]) -> bytes:
        return self.keyring.unwrap(certificate_id, WrappedKey(row.kek_id, row.wrapped_data_key))

    def _opened(self, certificate_id: str, row: Row[*tuple[Any, ...]], data_key: bytes) -> Certificate:
        pid = open_sealed(data_key, certificate_id, Purpose.PATIENT, row.patient_ciphertext)
        return _certificate(row, PersonId(pid.decode("ascii")))

    async def get(self, certificate_id: str, *, for_update: bool = False) -> Certificate | None:
        query = _GET_FOR_UPDATE if for_update else _GET
        row = (await self.connection.execute(query, {"certificate_id": certificate_id})).first()
        if row is None:
            return None
        try:
            return self._opened(certificate_id, row, self._data_key(certificate_id, row))
        except errors.StoredDataUnreadable as exc:
            raise _unreadable(exc) from None

    async def get_with_document(self, certificate_id: str) -> CertificateWithDocument | None:
        row = (await self.connection.execute(_GET_WITH_DOCUMENT, {"certificate_id": certificate_id})).first()
        if row is None:
            return None
        try:
            data_key = self._data_key(certificate_id, row)
            return CertificateWithDocument(
                self._opened(certificate_id, row, data_key),
                open_sealed(data_key, certificate_id, Purpose.DOCUMENT, row.ciphertext),
            )
        except errors.StoredDataUnreadable as exc:
            raise _unreadable(exc) from None

    async def add(self, certificate: Certificate, document: bytes) -> bool:
        """Store a new certificate with its document, events and relations; False, storing nothing,
        where its id is taken already."""
        unit = certificate.care_unit
        patient_key = self.keyring.lookup(certificate.patient.value)
        data_key = new_data_key()
        wrapped = self.keyring.wrap(certificate.id, data_key)
        added = await self.connection.execute(
            self._add_if_new,
            {
                "id": certificate.id,
                "id_root": certificate.id_root,
                "type_code": certificate.type_code,
                "type_code_system": certificate.type_code_system,
                "type_display_name": certificate.type_display_name,
                "type_version": certificate.type_version,
                "patient_key": patient_key,
                "patient_ciphertext": seal(
                    data_key, certificate.id, Purpose.PATIENT, certificate.patient.value.encode("ascii")
                ),
                "wrapped_data_key": wrapped.wrapped,
                "kek_id": wrapped.kek_id,
                "signed_at": certificate.signed_at,
                "issuer_id": certificate.issuer_id,
                "issuer_name": certificate.issuer_name,
                "care_unit_id": unit.unit_id,
                "care_unit_name": unit.unit_name,
                "workplace_code": unit.workplace_code,
                "care_giver_id": unit.care_giver_id,
                "care_giver_name": unit.care_giver_name,
                "registered_at": certificate.registered_at,
                "care_available": certificate.care_available,
                "citizen_available": certificate.citizen_available,
                "revoked": certificate.revoked,
                "valid_from": certificate.valid_from,
                "valid_to": certificate.valid_to,
            },
        )
        if added.rowcount == 0:
            return False
        await self.connection.execute(
            _ADD_DOCUMENT,
            {
                "certificate_id": certificate.id,
                "ciphertext": seal(data_key, certificate.id, Purpose.DOCUMENT, document),
            },
        )
        await self._add_events(certificate.id, certificate.status_events)
        if certificate.relations:
            # One statement for them all (executemany); most certificates state none, and cost none.
            await self.connection.execute(
                _ADD_RELATION,
                [
                    {
                        "certificate_id": certificate.id,
                        "kind": r.kind.value,
                        "related_id": r.certificate_id,
                        "related_root": r.certificate_root,
                        "patient_key": patient_key,
                        "certificate_root": certificate.id_root,
                        "registered_at": certificate.registered_at,
                        "revoked": certificate.revoked,
                    }
                    for r in certificate.relations
                ],
            )
        return True

    async def _add_events(self, certificate_id: str, events: Sequence[StatusEvent]) -> None:
        if not events:
            return
        # One statement for them all (executemany), in order: their ids order the history.
        await self.connection.execute(
            _ADD_EVENT,
            [
                {"certificate_id": certificate_id, "code": e.code.value, "party": e.party.value, "at": e.at}
                for e in events
            ],
        )

    async def list_for_patient(
        self,
        patient: PersonId,
        *,
        types: Sequence[str] = (),
        care_unit_ids: Sequence[str] = (),
        care_giver_id: str | None = None,
        valid_between: tuple[dt.date | None, dt.date | None] = (None, None),
    ) -> list[Certificate]:
        """A patient's certificates; ``valid_between``: only those whose validity overlaps these days
        (an end of None is open)."""
        first, last = valid_between
        query = _list_query(
            self.connection.dialect.name,
            bool(types),
            bool(care_unit_ids),
            care_giver_id is not None,
            first is not None,
            last is not None,
        )
        params: dict[str, Any] = {"patient_key": self.keyring.lookup(patient.value)}
        if types:
            params["types"] = list(types)
        if care_unit_ids:
            params["care_unit_ids"] = list(care_unit_ids)
        if care_giver_id is not None:
            params["care_giver_id"] = care_giver_id
        if first is not None:
            params["valid_from"] = first
        if last is not None:
            params["valid_to"] = last
        rows = await self.connection.execute(query, params)
        return [_certificate(row, patient) for row in rows]

    async def update(self, certificate: Certificate, decision: rules.Decision) -> None:
        """Write what the decision changes of the certificate as it was loaded (and locked): its flags
        only where they change, so that recording a status that leaves them (SENTTO, a recipient's
        RECEIV) is one insert; and its event. A revocation is copied to the relations the certificate
        states, where it states any (a revoked replacement replaces nothing: model.Certificate)."""
        if decision.changes_flags(certificate):
            await self.connection.execute(
                _SET_FLAGS,
                {
                    "certificate_id": certificate.id,
                    "care_available": decision.care_available,
                    "citizen_available": decision.citizen_available,
                    "revoked": decision.revoked,
                },
            )
        if decision.revoked != certificate.revoked and certificate.relations:
            await self.connection.execute(
                _SET_RELATIONS_REVOKED, {"stating_id": certificate.id, "revoked": decision.revoked}
            )
        if decision.event is not None:
            await self._add_events(certificate.id, [decision.event])

    async def delete(self, certificate_ids: Sequence[str]) -> None:
        """Rule 9: the document, the metadata, the status history and the relations it states go; audit
        records stay, and so do the relations other certificates state to it (theirs, by their own
        flags). The wrapped data key is on the certificate's row, so it goes in the same transaction as
        the ciphertext it opens."""
        if not certificate_ids:
            return
        # Deleted explicitly rather than by ON DELETE CASCADE alone: SQLite enforces foreign keys
        # only when asked, and the rule must hold on every engine.
        for table, column in (
            (documents, documents.c.certificate_id),
            (status_events, status_events.c.certificate_id),
            (certificate_relations, certificate_relations.c.certificate_id),
            (certificates, certificates.c.id),
        ):
            await self.connection.execute(delete(table).where(column.in_(certificate_ids)))

    async def care_copies_of(self, care_giver_id: str, *, after: str, limit: int) -> list[str]:
        """Ids of the care giver's certificates its care provider still keeps, in id order after
        ``after`` (the operator's erasure pages through them; indexed by care giver)."""
        rows = await self.connection.execute(
            select(certificates.c.id)
            .where(
                certificates.c.care_giver_id == care_giver_id,
                certificates.c.care_available.is_(True),
                certificates.c.id > after,
            )
            .order_by(certificates.c.id)
            .limit(limit)
        )
        return [row.id for row in rows]


class SqlConsentRepository:
    def __init__(self, connection: Connection, keyring: KeyRing) -> None:
        self.connection = connection
        self.keyring = keyring

    async def get(self, patient: PersonId, *, for_update: bool = False, for_share: bool = False) -> Consent:
        query = _CONSENT_FOR_UPDATE if for_update else _CONSENT_FOR_SHARE if for_share else _CONSENT
        row = (
            await self.connection.execute(query, {"patient_key": self.keyring.lookup(patient.value)})
        ).first()
        if row is None:
            return Consent(patient, given=False, changed_at=None)
        return Consent(patient, given=row.given, changed_at=row.changed_at)

    async def set(self, patient: PersonId, *, given: bool, at: dt.datetime, caller: Caller) -> None:
        # Only a real change updates: where the row already holds ``given`` (a concurrent first consent
        # committed after our read found none), the insert below fails on the key, the unit of work
        # reports ConcurrentChange, and the operation runs again and sees the row.
        key = self.keyring.lookup(patient.value)
        changed = await self.connection.execute(
            update(consents)
            .where(consents.c.patient_key == key, consents.c.given != given)
            .values(given=given, changed_at=at)
        )
        if changed.rowcount == 0:
            await self.connection.execute(
                insert(consents),
                {
                    "patient_key": key,
                    "given": given,
                    "changed_at": at,
                },
            )
        await self.connection.execute(
            insert(consent_changes),
            {
                "patient_key": key,
                "given": given,
                "at": at,
                "actor_kind": caller.kind.value,
                "actor_id": caller.system_id,
                "channel": caller.channel.value,
            },
        )


# What ``KeyRing.lookup`` gives (base64url of 32 bytes); no HSA id has that shape.
_HASHED = re.compile(r"[A-Za-z0-9_-]{43}")


def actor_person_key(keyring: KeyRing, record: AuditRecord) -> str | None:
    """What an audit record stores of the person who acted (one column): a personal identity number,
    the citizen's or a professional's, as its keyed hash (the citizen's ``patient_key``); a staff id
    as it is. The two cannot be taken for each other: a hash has 43 characters of base64url, and a
    staff id is what the request or the operator named."""
    person = record.actor_citizen or record.actor_professional
    if isinstance(person, PersonId):
        return keyring.lookup(person.value)
    return person.value if person is not None else None


class SqlAuditLog:
    """The audit log. A record is inserted unsealed, in the transaction of its effect, and takes no
    lock another transaction needs (README.md, "Audit log"): the sealer (``audit_sealer``) gives it its place in the
    hash chain after commit."""

    def __init__(self, connection: Connection, keyring: KeyRing) -> None:
        self.connection = connection
        self.keyring = keyring
        # Records of the open transaction, for the metrics once it has committed.
        self.pending: list[AuditRecord] = []

    async def add(self, record: AuditRecord) -> None:
        if record.at.tzinfo is not None:
            # The column keeps no zone: an aware time would read back as another value than the one
            # hashed, and the chain would look tampered with.
            raise ValueError("audit times are local wall-clock times without a zone")
        await self.connection.execute(
            _ADD_AUDIT_RECORD,
            {
                "at": record.at,
                "action": record.action.value,
                "outcome": record.outcome.value,
                "actor_kind": record.actor_kind.value,
                "actor_id": record.actor_id,
                "actor_person_id": actor_person_key(self.keyring, record),
                "channel": record.channel.value,
                "patient_key": self.keyring.lookup(record.patient.value) if record.patient else None,
                "certificate_ids": ",".join(record.certificate_ids),
                "care_unit_id": record.care_unit_id,
                "care_giver_id": record.care_giver_id,
                "care_unit_name": record.care_unit_name,
                "care_giver_name": record.care_giver_name,
                "recipient": record.recipient.value if record.recipient else None,
                "status": record.status.value if record.status else None,
                "certificate_type": record.certificate_type,
                "deleted": record.deleted or None,
                "called": record.called,
                "reason": record.reason.__name__ if record.reason else None,
            },
        )
        self.pending.append(record)

    async def list_for_patient(
        self,
        patient: PersonId,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[list[AuditRecord], int]:
        """One patient's records, newest first, one page of them, and how many there are in all."""
        key = self.keyring.lookup(patient.value)
        where = [audit_records.c.patient_key == key]
        if start is not None:
            where.append(audit_records.c.at >= start)
        if end is not None:
            where.append(audit_records.c.at < end)
        total = (
            await self.connection.execute(select(func.count()).select_from(audit_records).where(*where))
        ).scalar()
        rows = await self.connection.execute(
            select(audit_records)
            .where(*where)
            .order_by(audit_records.c.at.desc(), audit_records.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return [_audit_record(row, patient, key) for row in rows], int(total or 0)


def _audit_record(row: Row[Any], patient: PersonId, patient_key: str) -> AuditRecord:
    # A hashed actor is shown as the patient where it is the patient (the citizen acting on their own
    # data), else as unknown: the hash is no person id, and another person's is not to be named.
    stored = row.actor_person_id
    citizen = patient if stored == patient_key else None
    hashed = stored is not None and _HASHED.fullmatch(stored) is not None
    return AuditRecord(
        at=row.at,
        action=Action(row.action),
        outcome=Outcome(row.outcome),
        actor_kind=CallerKind(row.actor_kind),
        actor_id=row.actor_id,
        channel=Channel(row.channel),
        patient=patient,
        certificate_ids=tuple(i for i in row.certificate_ids.split(",") if i),
        care_unit_id=row.care_unit_id,
        care_giver_id=row.care_giver_id,
        actor_citizen=citizen,
        actor_professional=StaffId(stored) if stored is not None and not hashed else None,
        recipient=Party(row.recipient) if row.recipient else None,
        status=StatusCode(row.status) if row.status else None,
        certificate_type=row.certificate_type,
        deleted=row.deleted or 0,
        called=row.called,
        # A reason the error tree no longer has reads as none: the row keeps its name.
        reason=errors.named(row.reason) if row.reason else None,
        care_unit_name=row.care_unit_name,
        care_giver_name=row.care_giver_name,
    )


class SqlOutbox:
    """What leaves the service, written in the transaction of its cause (``tables.outbox``)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def add(self, events: Sequence[Outgoing], *, now: dt.datetime) -> None:
        if events:
            await self.connection.execute(_ADD_OUTGOING, [outbox_row(event, now=now) for event in events])


def outbox_row(event: Outgoing, *, now: dt.datetime) -> dict[str, Any]:
    """The outbox row of an event: a new message id, and the event's fields as JSON."""
    destination = event.recipient.value if isinstance(event, Delivery) else STATISTICS
    return {
        "message_id": str(uuid.uuid4()),
        "destination": destination,
        "kind": event.kind.value,
        "certificate_id": event.certificate_id,
        "body": json.dumps(_event_fields(event), separators=(",", ":")),
        "created_at": now,
    }


def _event_fields(event: Outgoing) -> dict[str, Any]:
    fields = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        fields[field.name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return fields


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    certificates: dict[tuple[bool, bool], int]  # by (care_available, citizen_available)
    citizens_with_consent: int
    audit_records: int


async def store_statistics(connection: AsyncConnection) -> StoreStatistics:
    """Counts for the operators' gauges. The audit count is the chain's head and the unsealed tail: the
    log is append-only and its seq gapless, so that is exact without counting the largest table."""
    by_state = await connection.execute(
        select(certificates.c.care_available, certificates.c.citizen_available, func.count()).group_by(
            certificates.c.care_available, certificates.c.citizen_available
        )
    )
    consenting = await connection.scalar(select(func.count()).select_from(consents).where(consents.c.given))
    sealed = await connection.scalar(select(audit_head.c.seq))
    unsealed = await connection.scalar(
        select(func.count()).select_from(audit_records).where(audit_records.c.seq.is_(None))
    )
    return StoreStatistics(
        certificates={(bool(care), bool(citizen)): int(n) for care, citizen, n in by_state},
        citizens_with_consent=int(consenting or 0),
        audit_records=int(sealed or 0) + int(unsealed or 0),
    )
