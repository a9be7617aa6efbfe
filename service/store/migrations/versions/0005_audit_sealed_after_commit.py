"""The audit log sealed after commit: records get an id when written and their place in the chain later

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 23:30:00.000000

The sealer (``service/store/audit_sealer.py``): a request no longer locks the chain's head to take the
next ``seq``; it inserts its record with an autoincrement ``id`` only, and the sealer fills in ``seq``,
``prev_hash`` and ``hash`` after commit. Records chained before this revision keep their places and
hashes (``id`` is not hashed) and get ``id = seq``, so the unsealed records written after them sort
after them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.store import audit_chain

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNSEALED = sa.text("seq IS NULL")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
    op.execute("UPDATE audit_records SET id = seq")
    if postgresql:
        op.execute("CREATE SEQUENCE audit_records_id_seq OWNED BY audit_records.id")
        op.execute(
            "SELECT setval('audit_records_id_seq', COALESCE((SELECT max(id) FROM audit_records), 0) + 1, false)"
        )
        op.execute("ALTER TABLE audit_records ALTER COLUMN id SET DEFAULT nextval('audit_records_id_seq')")
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_constraint("pk_audit_records", type_="primary")
        batch_op.alter_column("id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_primary_key("pk_audit_records", ["id"])
        for column, type_ in (
            ("seq", sa.BigInteger()),
            ("prev_hash", sa.String(64)),
            ("hash", sa.String(64)),
        ):
            batch_op.alter_column(column, existing_type=type_, nullable=True)
        batch_op.create_index("ix_audit_records_seq", ["seq"], unique=True)
        batch_op.create_index(
            "ix_audit_records_unsealed", ["id"], postgresql_where=_UNSEALED, sqlite_where=_UNSEALED
        )


def _seal_the_tail(connection: sa.Connection) -> None:
    """Revision 0004 knows no unsealed record: chain the tail in the order of id, as the sealer would
    (no checkpoint: signing needs the service's key; the next checkpoint covers them)."""
    records = sa.Table("audit_records", sa.MetaData(), autoload_with=connection)
    head = sa.Table("audit_head", sa.MetaData(), autoload_with=connection)
    found = connection.execute(sa.select(head.c.seq, head.c.hash).where(head.c.id == 1)).one()
    rows = connection.execute(
        sa.select(records).where(records.c.seq.is_(None)).order_by(records.c.id)
    ).mappings()
    links = list(audit_chain.link(found.seq, found.hash, rows))
    if not links:
        return
    connection.execute(
        records.update()
        .where(records.c.id == sa.bindparam("record_id"))
        .values(seq=sa.bindparam("place"), prev_hash=sa.bindparam("previous"), hash=sa.bindparam("digest")),
        [{"record_id": k.id, "place": k.seq, "previous": k.prev_hash, "digest": k.hash} for k in links],
    )
    connection.execute(head.update().where(head.c.id == 1).values(seq=links[-1].seq, hash=links[-1].hash))


def downgrade() -> None:
    _seal_the_tail(op.get_bind())
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_index("ix_audit_records_unsealed")
        batch_op.drop_index("ix_audit_records_seq")
        batch_op.drop_constraint("pk_audit_records", type_="primary")
        for column, type_ in (
            ("seq", sa.BigInteger()),
            ("prev_hash", sa.String(64)),
            ("hash", sa.String(64)),
        ):
            batch_op.alter_column(column, existing_type=type_, nullable=False)
        batch_op.create_primary_key("pk_audit_records", ["seq"])
        batch_op.drop_column("id")
