"""The audit log as a hash chain: seq, prev_hash and hash on every record, its head, signed checkpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 08:30:00.000000

The hash chain of the audit log (README "Audit log"): records already stored are chained in the order of their
old ids, which become the gapless ``seq`` 1, 2, 3 ... (an autoincrement leaves gaps where transactions rolled
back). The hash covers every other column as stored at this revision, read back the way the verifier reads it,
so it must run after any migration that rewrites audit values (e.g. encrypts or pseudonymises them): a later
one would break the chain it finds and has to rehash it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.store import audit_chain

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Records read, hashed and updated per round trip: bounded memory on a log of any size.
_PAGE = 2000


def _chain_existing_records(connection: sa.Connection) -> tuple[int, str]:
    """Give every stored record its seq, prev_hash and hash, in the order of id; return the last."""
    records = sa.Table("audit_records", sa.MetaData(), autoload_with=connection)
    unhashed = {"id", *audit_chain.CHAIN_COLUMNS}
    chain = (
        records.update()
        .where(records.c.id == sa.bindparam("old_id"))
        .values(
            seq=sa.bindparam("new_seq"), prev_hash=sa.bindparam("new_prev"), hash=sa.bindparam("new_hash")
        )
    )
    seq, last, last_id = 0, audit_chain.GENESIS, None
    while True:
        query = sa.select(records).order_by(records.c.id).limit(_PAGE)
        if last_id is not None:
            query = query.where(records.c.id > last_id)
        rows = connection.execute(query).mappings().all()
        if not rows:
            return seq, last
        updates = []
        for row in rows:
            seq += 1
            digest = audit_chain.record_hash(last, {k: v for k, v in row.items() if k not in unhashed})
            updates.append({"old_id": row["id"], "new_seq": seq, "new_prev": last, "new_hash": digest})
            last, last_id = digest, row["id"]
        connection.execute(chain, updates)


def upgrade() -> None:
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_head_one_row"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    seq, last = _chain_existing_records(connection)
    connection.execute(sa.insert(head).values(id=1, seq=seq, hash=last))
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_constraint("pk_audit_records", type_="primary")
        batch_op.drop_column("id")
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_primary_key("pk_audit_records", ["seq"])


def downgrade() -> None:
    # Back to an autoincrement id: the records keep their order (id = seq) and lose their chain.
    connection = op.get_bind()
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(sa.Column("id", sa.Integer(), nullable=True))
    op.execute("UPDATE audit_records SET id = seq")
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_constraint("pk_audit_records", type_="primary")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
        batch_op.alter_column("id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_primary_key("pk_audit_records", ["id"])
    if connection.dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_records_id_seq OWNED BY audit_records.id")
        op.execute(
            "SELECT setval('audit_records_id_seq', COALESCE((SELECT max(id) FROM audit_records), 0) + 1, false)"
        )
        op.execute("ALTER TABLE audit_records ALTER COLUMN id SET DEFAULT nextval('audit_records_id_seq')")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
