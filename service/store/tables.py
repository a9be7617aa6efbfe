"""The database schema. Alembic migrations (``store/migrations``) build exactly this; a test checks it.

The certificate's list fields are columns (lists never parse stored XML); the document sits in a table
of its own that only a get reads. Status events and the relations a certificate states cascade with it
(rule 9), audit records do not reference certificates at all, so they outlive a permanent deletion.

Encryption at rest (README "Data at rest", ``store/crypto.py``): the document and the patient's personal
identity number (PIN) are stored only as AES-256-GCM ciphertext under the certificate's own data key, which is
kept wrapped under a key-encryption key on the certificate's row, so that deleting the row deletes the key
with it. Every column named ``patient_key`` holds ``KeyRing.lookup(PIN)``, a keyed hash that finds a patient's
rows without storing the number.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("id_root", String(128), nullable=False),
    Column("type_code", String(64), nullable=False),
    Column("type_code_system", String(128), nullable=False),
    Column("type_display_name", String(256), nullable=False),
    Column("type_version", String(32), nullable=False),
    Column("patient_key", String(64), nullable=False),
    # The patient's PIN under the data key: a get by id shows whose certificate it is.
    Column("patient_ciphertext", LargeBinary(), nullable=False),
    # The data key, wrapped under the KEK ``kek_id`` (re-wrapped by ``intygstjanst rotate-kek``).
    Column("wrapped_data_key", LargeBinary(), nullable=False),
    Column("kek_id", String(32), nullable=False),
    Column("signed_at", DateTime(), nullable=True),
    Column("issuer_id", String(128), nullable=False),
    Column("issuer_name", String(256), nullable=False),
    Column("care_unit_id", String(128), nullable=False),
    Column("care_unit_name", String(256), nullable=False),
    Column("workplace_code", String(128), nullable=False),
    Column("care_giver_id", String(128), nullable=False),
    Column("care_giver_name", String(256), nullable=False),
    Column("registered_at", DateTime(), nullable=False),
    Column("care_available", Boolean(), nullable=False),
    Column("citizen_available", Boolean(), nullable=False),
    Column("revoked", Boolean(), nullable=False),
    # The validity (model.IssuedCertificate): the period the certificate states, else its signing day.
    Column("valid_from", Date(), nullable=True),
    Column("valid_to", Date(), nullable=True),
    # Every list is a patient's list; care lists narrow it by unit or care giver, the citizen's by the
    # days its validity overlaps (valid_to from the first day on, valid_from up to the last).
    Index(None, "patient_key", "care_unit_id"),
    Index(None, "patient_key", "care_giver_id"),
    Index(None, "patient_key", "valid_to", "valid_from"),
    Index(None, "care_giver_id"),
)

documents = Table(
    "certificate_documents",
    metadata,
    Column(
        "certificate_id",
        String(128),
        ForeignKey("certificates.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # The document as registered, sealed under the certificate's data key.
    Column("ciphertext", LargeBinary(), nullable=False),
)

# The relations a certificate states (model.Relation): it replaces, complements, extends or copies the
# certificate ``related_id`` names, which need not be stored here (registered elsewhere, or deleted). A
# certificate's relations go with it; those others state to it stay while their certificates do.
certificate_relations = Table(
    "certificate_relations",
    metadata,
    Column(
        "certificate_id",
        String(128),
        ForeignKey("certificates.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("kind", String(16), primary_key=True),
    Column("related_id", String(128), primary_key=True),
    Column("related_root", Text(), nullable=False),
    # What lists and gets show of the stating certificate (certificate_id), copied from its row: its
    # patient, id root and time of registration, which never change, and whether it is revoked, set with
    # it. Every list and get reads the relations of one patient by this index, joining nothing
    # (repositories._patient_relations).
    Column("patient_key", String(64), nullable=False),
    Column("certificate_root", String(128), nullable=False),
    Column("registered_at", DateTime(), nullable=False),
    Column("revoked", Boolean(), nullable=False),
    Index(None, "patient_key"),
)

status_events = Table(
    "status_events",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column(
        "certificate_id",
        String(128),
        ForeignKey("certificates.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("code", String(16), nullable=False),
    Column("party", String(16), nullable=False),
    Column("at", DateTime(), nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("patient_key", String(64), primary_key=True),
    Column("given", Boolean(), nullable=False),
    Column("changed_at", DateTime(), nullable=False),
)

consent_changes = Table(
    "consent_changes",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("patient_key", String(64), nullable=False, index=True),
    Column("given", Boolean(), nullable=False),
    Column("at", DateTime(), nullable=False),
    Column("actor_kind", String(32), nullable=False),
    Column("actor_id", String(256), nullable=False),
    Column("channel", String(16), nullable=False),
)

# The audit log (README "Audit log"; store/audit_chain.py, store/audit_sealer.py). A request inserts its
# record in its own transaction with only ``id`` to order it by; ``seq``, ``prev_hash`` and ``hash`` stay
# empty until the sealer, after commit, gives the record its place in the hash chain: ``seq`` 1, 2, 3 ...
# without gaps, ``hash`` covering ``prev_hash`` and every other column but ``id``.
audit_records = Table(
    "audit_records",
    metadata,
    # SQLite gives an autoincrement only to INTEGER PRIMARY KEY (the rowid).
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("seq", BigInteger(), nullable=True),
    Column("at", DateTime(), nullable=False),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("actor_kind", String(32), nullable=False),
    Column("actor_id", String(256), nullable=False),
    # An HSA id of a professional, or where a citizen acts, the keyed hash of their PIN.
    Column("actor_person_id", String(256), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("patient_key", String(64), nullable=True),
    Column("certificate_ids", Text(), nullable=False),
    Column("care_unit_id", String(128), nullable=True),
    Column("care_giver_id", String(128), nullable=True),
    Column("care_unit_name", String(256), nullable=True),
    Column("care_giver_name", String(256), nullable=True),
    # What ``action`` has beside it (model.AuditRecord); empty where the action has no such thing.
    Column("recipient", String(64), nullable=True),
    Column("status", String(64), nullable=True),
    Column("certificate_type", String(64), nullable=True),
    Column("deleted", Integer(), nullable=True),
    Column("called", String(64), nullable=True),
    Column("reason", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    # The citizen's access log extract reads one patient's records, newest first.
    Index(None, "patient_key", "at"),
    # A place in the chain is taken once; the verifier reads the chain in its order.
    Index(None, "seq", unique=True),
    # The sealer's work list: small (the unsealed tail), so finding it never scans the log.
    Index(
        "ix_audit_records_unsealed",
        "id",
        postgresql_where=text("seq IS NULL"),
        sqlite_where=text("seq IS NULL"),
    ),
)

# One row: the last sealed record of the chain. Only the sealer writes it, so a tail cut off the chain
# leaves the head naming a record that is not there; no request ever reads or locks it.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("seq", BigInteger(), nullable=False),
    Column("hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="ck_audit_head_one_row"),
)

# The chain's hash at ``seq``, signed (Ed25519, hex) by the key named ``key_id`` at ``at``.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger(), primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("at", DateTime(), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(256), nullable=False),
)

# What leaves the service (README.md, "Recipients and statistics"): deliveries to recipients and statistics
# events, written in the transaction of their cause (a transactional outbox) and published by the relay
# (service/relay.py), which deletes a row once the broker has confirmed it. ``id`` orders the events, and so
# a certificate's events, as their causes committed (a certificate's changes take its row's lock);
# ``message_id`` stays the same for every attempt, so a recipient that gets a message twice can tell. No row
# names a patient or holds a document: a delivery of a sent certificate reads the document when it is
# published (``destination`` is a recipient's part code, or ``statistics``).
STATISTICS = "statistics"  # outbox.destination of the statistics events
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("destination", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("certificate_id", String(128), nullable=False),
    # The event's fields as JSON (model.Delivery, model.StatisticsEvent).
    Column("body", Text(), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    # Publish attempts that failed, when the next may be made, and why the last failed (an error's name).
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(), nullable=True),
    Column("last_error", String(64), nullable=True),
    # Set when the relay gave up on the event after its attempts (dead-lettered).
    Column("dead_at", DateTime(), nullable=True),
    # The relay's work list: the events not yet published nor given up on, in order.
    Index(
        "ix_outbox_pending",
        "id",
        postgresql_where=text("dead_at IS NULL"),
        sqlite_where=text("dead_at IS NULL"),
    ),
    # The certificates whose events wait for a retry (store/outbox._WAITING): few, found without a scan.
    Index(
        "ix_outbox_waiting",
        "next_attempt_at",
        "certificate_id",
        postgresql_where=text("dead_at IS NULL AND next_attempt_at IS NOT NULL"),
        sqlite_where=text("dead_at IS NULL AND next_attempt_at IS NOT NULL"),
    ),
)
