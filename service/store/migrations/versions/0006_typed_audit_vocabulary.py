"""The audit vocabulary typed: what an action has beside it in columns of its own

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 08:30:00.000000

``action`` and ``detail`` held it all in strings that readers parsed back: ``send:FKASSA``,
``status:RECEIV:FKASSA``, ``call:GetCertificate:2``, ``deleted 3``, an error's name. Each record becomes an
action of ``model.Action`` and the columns ``recipient``, ``status``, ``certificate_type``, ``deleted``,
``called`` and ``reason``; ``detail`` goes. No hash changes: records are hashed in the words they were
first written in (``audit_chain.first_written``), which this conversion keeps one to one. It checks that
for every record, and stops, changing nothing, at a record it could not give back its words.
"""

import re
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from service.model import Action
from service.store import audit_chain

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000
_DELETED = re.compile(r"deleted ([1-9][0-9]*)")
_ACTIONS = frozenset(action.value for action in Action)


def _typed(action: str, outcome: str, detail: str) -> dict[str, Any]:
    """The typed columns of a record first written with ``action`` and ``detail``."""
    row: dict[str, Any] = dict.fromkeys(audit_chain.TYPED_COLUMNS)
    kind, _, rest = action.partition(":")
    if rest and kind == "send":
        action, row["recipient"] = "send", rest
    elif rest and kind == "status":
        action = "set_status"
        row["status"], _, row["recipient"] = rest.partition(":")
    elif rest and kind == "call":
        action, row["called"] = "call", rest
    if outcome in ("denied", "error"):
        row["reason"] = detail or None
    elif action == "register" and outcome == "ok":
        row["certificate_type"] = detail or None
    elif action == "remove_care_copy" and outcome == "ok":
        row["deleted"] = 1 if detail == "deleted" else None
    elif action in ("give_consent", "withdraw_consent") and (deleted := _DELETED.fullmatch(detail)):
        row["deleted"] = int(deleted[1])
    return {"action": action, **row}


def _records(connection: sa.Connection, table: sa.Table, *columns: str) -> Iterator[Sequence[sa.Row[Any]]]:
    """Every record, a batch at a time in the order of id."""
    after = None
    while True:
        query = sa.select(table.c.id, *(table.c[c] for c in columns)).order_by(table.c.id).limit(_BATCH)
        if after is not None:
            query = query.where(table.c.id > after)
        rows = connection.execute(query).all()
        if not rows:
            return
        yield rows
        after = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("audit_records") as batch_op:
        for name in ("recipient", "status", "certificate_type", "called", "reason"):
            batch_op.add_column(sa.Column(name, sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("deleted", sa.Integer(), nullable=True))
    connection = op.get_bind()
    records = sa.Table("audit_records", sa.MetaData(), autoload_with=connection)
    update = (
        records.update()
        .where(records.c.id == sa.bindparam("record_id"))
        .values({name: sa.bindparam(f"new_{name}") for name in ("action", *audit_chain.TYPED_COLUMNS)})
    )
    for rows in _records(connection, records, "action", "outcome", "detail"):
        changes = []
        for row in rows:
            typed = _typed(row.action, row.outcome, row.detail)
            folded = audit_chain.first_written({**typed, "outcome": row.outcome})
            if typed["action"] not in _ACTIONS or folded != {
                "action": row.action,
                "outcome": row.outcome,
                "detail": row.detail,
            }:
                # Only the id: the record's values may name a patient's certificates.
                raise RuntimeError(f"audit record {row.id} has an action or detail of no known form")
            changes.append({"record_id": row.id, **{f"new_{k}": v for k, v in typed.items()}})
        connection.execute(update, changes)
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_column("detail")


def downgrade() -> None:
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(sa.Column("detail", sa.String(256), nullable=True))
    connection = op.get_bind()
    records = sa.Table("audit_records", sa.MetaData(), autoload_with=connection)
    update = (
        records.update()
        .where(records.c.id == sa.bindparam("record_id"))
        .values(action=sa.bindparam("old_action"), detail=sa.bindparam("old_detail"))
    )
    for rows in _records(connection, records, "action", "outcome", *audit_chain.TYPED_COLUMNS):
        changes = []
        for row in rows:
            words = audit_chain.first_written(row._asdict())
            changes.append(
                {"record_id": row.id, "old_action": words["action"], "old_detail": words["detail"]}
            )
        connection.execute(update, changes)
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.alter_column("detail", existing_type=sa.String(256), nullable=False)
        for name in reversed(audit_chain.TYPED_COLUMNS):
            batch_op.drop_column(name)
