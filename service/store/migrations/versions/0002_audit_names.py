"""Names of the care unit and care giver in audit records

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 06:15:41.420267
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The citizen's access-log extract names the care unit and care giver (PDL), not only their ids.
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(sa.Column("care_unit_name", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("care_giver_name", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_column("care_giver_name")
        batch_op.drop_column("care_unit_name")
