"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 05:39:07.622760
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("actor_kind", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.String(length=256), nullable=False),
        sa.Column("actor_person_id", sa.String(length=256), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("certificate_ids", sa.Text(), nullable=False),
        sa.Column("care_unit_id", sa.String(length=128), nullable=True),
        sa.Column("care_giver_id", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_records_patient_id_at"), ["patient_id", "at"], unique=False
        )

    op.create_table(
        "certificates",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("id_root", sa.String(length=128), nullable=False),
        sa.Column("type_code", sa.String(length=64), nullable=False),
        sa.Column("type_code_system", sa.String(length=128), nullable=False),
        sa.Column("type_display_name", sa.String(length=256), nullable=False),
        sa.Column("type_version", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(), nullable=True),
        sa.Column("issuer_id", sa.String(length=128), nullable=False),
        sa.Column("issuer_name", sa.String(length=256), nullable=False),
        sa.Column("care_unit_id", sa.String(length=128), nullable=False),
        sa.Column("care_unit_name", sa.String(length=256), nullable=False),
        sa.Column("workplace_code", sa.String(length=128), nullable=False),
        sa.Column("care_giver_id", sa.String(length=128), nullable=False),
        sa.Column("care_giver_name", sa.String(length=256), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("care_available", sa.Boolean(), nullable=False),
        sa.Column("citizen_available", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificates")),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_certificates_care_giver_id"), ["care_giver_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_certificates_patient_id_care_giver_id"),
            ["patient_id", "care_giver_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_certificates_patient_id_care_unit_id"),
            ["patient_id", "care_unit_id"],
            unique=False,
        )

    op.create_table(
        "consent_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("given", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.String(length=256), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_changes")),
    )
    with op.batch_alter_table("consent_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_changes_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "consents",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("given", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_consents")),
    )
    op.create_table(
        "certificate_documents",
        sa.Column("certificate_id", sa.String(length=128), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["certificate_id"],
            ["certificates.id"],
            name=op.f("fk_certificate_documents_certificate_id_certificates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("certificate_id", name=op.f("pk_certificate_documents")),
    )
    op.create_table(
        "status_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("certificate_id", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("party", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["certificate_id"],
            ["certificates.id"],
            name=op.f("fk_status_events_certificate_id_certificates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_events")),
    )
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_status_events_certificate_id"), ["certificate_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_status_events_certificate_id"))

    op.drop_table("status_events")
    op.drop_table("certificate_documents")
    op.drop_table("consents")
    with op.batch_alter_table("consent_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_changes_patient_id"))

    op.drop_table("consent_changes")
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificates_patient_id_care_unit_id"))
        batch_op.drop_index(batch_op.f("ix_certificates_patient_id_care_giver_id"))
        batch_op.drop_index(batch_op.f("ix_certificates_care_giver_id"))

    op.drop_table("certificates")
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_records_patient_id_at"))

    op.drop_table("audit_records")
