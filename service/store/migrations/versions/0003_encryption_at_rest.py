"""Encryption at rest: documents and patients' PINs as ciphertext, PINs for lookups as keyed hashes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 08:30:00.000000

Encryption at rest (README "Data at rest", ``service/store/crypto.py``). Every stored row is converted in this
migration's transaction: each certificate gets a data key (wrapped under the current KEK) that seals its
document and its patient's PIN; every ``patient_id`` becomes ``patient_key``, the lookup hash of the PIN; an
audit record's actor person id that is a citizen's PIN becomes its hash. The keys come from
``config.attributes["keyring"]`` (``migration.upgrade(url, keyring=...)``); with rows to convert and no keys
it stops before changing anything. It cannot be undone: the hashes do not give the numbers back.
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from service.errors import InvalidPersonId
from service.model import PersonId
from service.store.crypto import KeyRing, Purpose, new_data_key, seal

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500

# The tables as this migration finds and leaves them (not service.store.tables, which moves on).
certificates = sa.table(
    "certificates",
    sa.column("id", sa.String()),
    sa.column("patient_key", sa.String()),
    sa.column("patient_ciphertext", sa.LargeBinary()),
    sa.column("wrapped_data_key", sa.LargeBinary()),
    sa.column("kek_id", sa.String()),
)
documents = sa.table(
    "certificate_documents",
    sa.column("certificate_id", sa.String()),
    sa.column("ciphertext", sa.LargeBinary()),
)
consents = sa.table("consents", sa.column("patient_key", sa.String()))
consent_changes = sa.table("consent_changes", sa.column("patient_key", sa.String()))
audit_records = sa.table(
    "audit_records", sa.column("patient_key", sa.String()), sa.column("actor_person_id", sa.String())
)


def _keyring(bind: sa.Connection) -> KeyRing | None:
    keyring = context.config.attributes.get("keyring")
    if keyring is None:
        for name in ("certificates", "consents", "consent_changes", "audit_records"):
            if bind.scalar(sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)) is not None:
                raise RuntimeError(
                    "migration 0003 encrypts the stored certificates and hashes identity numbers, and the "
                    f"table {name} has rows: run it with the keys (`intygstjanst migrate` with "
                    "INTYG_KEYS_FILE, or INTYG_KEK and INTYG_LOOKUP_KEY)"
                )
    return keyring


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        # Copying ``certificates`` in batch mode would cascade to its documents (see env.py).
        raise RuntimeError("migration 0003 needs SQLite's foreign keys off: run it with migration.upgrade")
    keyring = _keyring(bind)

    with op.batch_alter_table("certificates") as batch_op:
        batch_op.drop_index("ix_certificates_patient_id_care_unit_id")
        batch_op.drop_index("ix_certificates_patient_id_care_giver_id")
        batch_op.alter_column("patient_id", new_column_name="patient_key", existing_type=sa.String(64))
        batch_op.add_column(sa.Column("patient_ciphertext", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("wrapped_data_key", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("kek_id", sa.String(length=32), nullable=True))
    with op.batch_alter_table("certificate_documents") as batch_op:
        batch_op.alter_column("content", new_column_name="ciphertext", existing_type=sa.LargeBinary())
    for table in ("consents", "consent_changes", "audit_records"):
        with op.batch_alter_table(table) as batch_op:
            if table == "consent_changes":
                batch_op.drop_index("ix_consent_changes_patient_id")
            if table == "audit_records":
                batch_op.drop_index("ix_audit_records_patient_id_at")
            batch_op.alter_column("patient_id", new_column_name="patient_key", existing_type=sa.String(64))

    if keyring is not None:
        _encrypt_certificates(bind, keyring)
        _hash_patients(bind, keyring)

    with op.batch_alter_table("certificates") as batch_op:
        for column in ("patient_ciphertext", "wrapped_data_key"):
            batch_op.alter_column(column, existing_type=sa.LargeBinary(), nullable=False)
        batch_op.alter_column("kek_id", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index("ix_certificates_patient_key_care_unit_id", ["patient_key", "care_unit_id"])
        batch_op.create_index("ix_certificates_patient_key_care_giver_id", ["patient_key", "care_giver_id"])
    with op.batch_alter_table("consent_changes") as batch_op:
        batch_op.create_index("ix_consent_changes_patient_key", ["patient_key"])
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.create_index("ix_audit_records_patient_key_at", ["patient_key", "at"])


def _encrypt_certificates(bind: sa.Connection, keyring: KeyRing) -> None:
    """Each certificate, in batches by id: a data key, the document and the PIN sealed under it."""
    after = ""
    while True:
        rows = bind.execute(
            sa.select(certificates.c.id, certificates.c.patient_key, documents.c.ciphertext)
            .join_from(certificates, documents, documents.c.certificate_id == certificates.c.id, isouter=True)
            .where(certificates.c.id > after)
            .order_by(certificates.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        sealed, documents_sealed = [], []
        for certificate_id, pid, document in rows:
            data_key = new_data_key()
            wrapped = keyring.wrap(certificate_id, data_key)
            sealed.append(
                {
                    "row_id": certificate_id,
                    "patient_key": keyring.lookup(pid),
                    "patient_ciphertext": seal(
                        data_key, certificate_id, Purpose.PATIENT, pid.encode("ascii")
                    ),
                    "wrapped_data_key": wrapped.wrapped,
                    "kek_id": wrapped.kek_id,
                }
            )
            if document is not None:
                documents_sealed.append(
                    {
                        "row_id": certificate_id,
                        "ciphertext": seal(data_key, certificate_id, Purpose.DOCUMENT, document),
                    }
                )
        bind.execute(certificates.update().where(certificates.c.id == sa.bindparam("row_id")), sealed)
        if documents_sealed:
            bind.execute(
                documents.update().where(documents.c.certificate_id == sa.bindparam("row_id")),
                documents_sealed,
            )
        after = rows[-1].id


def _hash_patients(bind: sa.Connection, keyring: KeyRing) -> None:
    """Every stored PIN outside the certificates becomes its lookup hash, one distinct value at a time
    (a citizen's audit records are many; their distinct numbers far fewer)."""
    for table in (consents, consent_changes, audit_records):
        column = table.c.patient_key
        pids = bind.scalars(sa.select(column).where(column.is_not(None)).distinct()).all()
        for pid in pids:
            bind.execute(table.update().where(column == pid).values(patient_key=keyring.lookup(pid)))
    actors = audit_records.c.actor_person_id
    for person_id in bind.scalars(sa.select(actors).where(actors.is_not(None)).distinct()).all():
        hashed = actor_person_key(keyring, person_id)
        if hashed != person_id:
            bind.execute(audit_records.update().where(actors == person_id).values(actor_person_id=hashed))


# A personal identity number as callers wrote it, valid or not (10 or 12 digits, with or without the
# separator). Records of before this revision kept the actor's person id as one untyped string: a
# number of this shape was a citizen's (or a professional's) and is hashed; anything else, an HSA id.
_PIN_SHAPED = re.compile(r"(?:\d{2})?\d{6}[-+]?\d{4}")


def actor_person_key(keyring: KeyRing, person_id: str) -> str:
    if not _PIN_SHAPED.fullmatch(person_id.strip()):
        return person_id
    try:
        return keyring.lookup(PersonId.parse(person_id).value)
    except InvalidPersonId:
        return keyring.lookup(person_id.strip())


def downgrade() -> None:
    raise RuntimeError(
        "migration 0003 cannot be undone: identity numbers are stored only as keyed hashes, "
        "and documents only as ciphertext (restore a backup taken before it instead)"
    )
