"""Validity and relations: each certificate's validity period in columns, the relations it states in a table

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:30:00.000000

``certificates`` gains ``valid_from`` and ``valid_to`` (``model.IssuedCertificate``: the period the certificate
states where its type states one, ``certificate_type.Validity``, else its signing day), indexed for the
citizen's lists by date; ``certificate_relations`` holds the relations a certificate states (``intyg/relation``:
it replaces, complements, extends or copies another).

Stored certificates get both from their documents, read as registration reads them (``document.validity``,
``document.relations``): each document is opened with the keys of encryption at rest
(``config.attributes["keyring"]``, ``migration.upgrade(url, keyring=...)``; with certificates stored and no keys
it stops before changing anything) and parsed where it may hold either, a type with a period or the word
"relation". A document stored before registration checked them keeps what can be read of it: a period it does
not state readably gives the signing day, and relations that are not all readable give none. A document that
cannot be opened stops the migration, naming the certificate, with nothing changed.
"""

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from service import document, errors
from service.certificate_type import TYPES, Validity
from service.store.crypto import KeyRing, Purpose, WrappedKey, open_sealed

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500

# The tables as this migration finds and leaves them (not service.store.tables, which moves on).
certificates = sa.table(
    "certificates",
    sa.column("id", sa.String()),
    sa.column("id_root", sa.String()),
    sa.column("type_code", sa.String()),
    sa.column("patient_key", sa.String()),
    sa.column("registered_at", sa.DateTime()),
    sa.column("revoked", sa.Boolean()),
    sa.column("signed_at", sa.DateTime()),
    sa.column("wrapped_data_key", sa.LargeBinary()),
    sa.column("kek_id", sa.String()),
    sa.column("valid_from", sa.Date()),
    sa.column("valid_to", sa.Date()),
)
documents = sa.table(
    "certificate_documents",
    sa.column("certificate_id", sa.String()),
    sa.column("ciphertext", sa.LargeBinary()),
)
relations = sa.table(
    "certificate_relations",
    sa.column("certificate_id", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("related_id", sa.String()),
    sa.column("related_root", sa.Text()),
    sa.column("patient_key", sa.String()),
    sa.column("certificate_root", sa.String()),
    sa.column("registered_at", sa.DateTime()),
    sa.column("revoked", sa.Boolean()),
)
# The types whose validity is a stated period: only their documents are read for it.
_PERIOD_TYPES = frozenset(code for code, t in TYPES.items() if t.validity is not Validity.SIGNED)


def _keyring(bind: sa.Connection) -> KeyRing | None:
    keyring = context.config.attributes.get("keyring")
    if (
        keyring is None
        and bind.scalar(sa.select(sa.literal(1)).select_from(certificates).limit(1)) is not None
    ):
        raise RuntimeError(
            "migration 0007 reads the stored certificates' validity periods and relations from their "
            "encrypted documents: run it with the keys (`intygstjanst migrate` with INTYG_KEYS_FILE, or "
            "INTYG_KEK and INTYG_LOOKUP_KEY)"
        )
    return keyring


def upgrade() -> None:
    bind = op.get_bind()
    keyring = _keyring(bind)
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.add_column(sa.Column("valid_from", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("valid_to", sa.Date(), nullable=True))
        batch_op.create_index(
            "ix_certificates_patient_key_valid_to_valid_from", ["patient_key", "valid_to", "valid_from"]
        )
    op.create_table(
        "certificate_relations",
        sa.Column("certificate_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("related_id", sa.String(length=128), nullable=False),
        sa.Column("related_root", sa.Text(), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("certificate_root", sa.String(length=128), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["certificate_id"],
            ["certificates.id"],
            name=op.f("fk_certificate_relations_certificate_id_certificates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "certificate_id", "kind", "related_id", name=op.f("pk_certificate_relations")
        ),
    )
    op.create_index("ix_certificate_relations_patient_key", "certificate_relations", ["patient_key"])
    if keyring is not None:
        _backfill(bind, keyring)


def _read(
    content: bytes, type_code: str, signed: dt.datetime | None
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The validity columns and relation rows of one document, as far as they can be read."""
    signed_day = signed.date() if signed is not None else None
    validity: tuple[dt.date | None, dt.date | None] = (signed_day, signed_day)
    found: list[dict[str, str]] = []
    relation = b"relation" in content
    if content and (type_code in _PERIOD_TYPES or relation):
        intyg = document.parse(content)
        # A period stored before registration read it, unreadable: the signing day, as a type without one.
        if type_code in _PERIOD_TYPES:
            with contextlib.suppress(errors.InvalidInput):
                validity = document.validity(intyg, type_code, signed)
        if relation:
            try:
                stated = document.relations(intyg)
            except errors.InvalidInput:
                stated = ()  # stored before registration refused what it could not read
            found = [
                {"kind": r.kind.value, "related_id": r.certificate_id, "related_root": r.certificate_root}
                for r in stated
            ]
    return {"valid_from": validity[0], "valid_to": validity[1]}, found


def _backfill(bind: sa.Connection, keyring: KeyRing) -> None:
    """Every certificate, in batches by id: its document opened and read (the module docstring)."""
    update = certificates.update().where(certificates.c.id == sa.bindparam("row_id"))
    after = ""
    while True:
        rows = bind.execute(
            sa.select(
                certificates.c.id,
                certificates.c.id_root,
                certificates.c.type_code,
                certificates.c.patient_key,
                certificates.c.registered_at,
                certificates.c.revoked,
                certificates.c.signed_at,
                certificates.c.kek_id,
                certificates.c.wrapped_data_key,
                documents.c.ciphertext,
            )
            .join_from(certificates, documents, documents.c.certificate_id == certificates.c.id, isouter=True)
            .where(certificates.c.id > after)
            .order_by(certificates.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        validities: list[dict[str, Any]] = []
        stated: list[dict[str, str]] = []
        for row in rows:
            content = b""
            if row.ciphertext is not None:
                try:
                    data_key = keyring.unwrap(row.id, WrappedKey(row.kek_id, row.wrapped_data_key))
                    content = open_sealed(data_key, row.id, Purpose.DOCUMENT, row.ciphertext)
                except errors.StoredDataUnreadable as exc:
                    # Only the id and what failed: never the document.
                    raise RuntimeError(f"migration 0007: certificate {row.id!r}: {exc}") from None
            columns, found = _read(content, row.type_code, row.signed_at)
            validities.append({"row_id": row.id, **columns})
            stating = {
                "certificate_id": row.id,
                "patient_key": row.patient_key,
                "certificate_root": row.id_root,
                "registered_at": row.registered_at,
                "revoked": row.revoked,
            }
            stated.extend({**stating, **relation} for relation in found)
        bind.execute(update, validities)
        if stated:
            bind.execute(relations.insert(), stated)
        after = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_certificate_relations_patient_key", table_name="certificate_relations")
    op.drop_table("certificate_relations")
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.drop_index("ix_certificates_patient_key_valid_to_valid_from")
        batch_op.drop_column("valid_to")
        batch_op.drop_column("valid_from")
