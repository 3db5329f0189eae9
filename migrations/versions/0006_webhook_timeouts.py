"""webhook timeouts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=False, server_default="5"))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("timeout_seconds")
