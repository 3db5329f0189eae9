"""file lookups (AutoV3, source digests indexed) and removed users

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

``wanlora which FILE`` finds a version by any digest a stray copy may carry: the stored file's sha256,
the payload hash, the source file's sha256 (Civitai's AutoV2 is its first 10 hex digits) and the
source's data-section sha256 (AutoV3: the digest without the header, so metadata edits keep it).
Versions registered before this revision have no AutoV3 (the source is not kept); the others match.
Removed users keep their row (the event log and old tokens name them), marked with when.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("version_files") as batch:
        batch.add_column(sa.Column("source_autov3", sa.String(length=64), nullable=True))
        batch.create_index("ix_version_files_source_sha256", ["source_sha256"])
        batch.create_index("ix_version_files_source_autov3", ["source_autov3"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("removed_at")
    with op.batch_alter_table("version_files") as batch:
        batch.drop_index("ix_version_files_source_autov3")
        batch.drop_index("ix_version_files_source_sha256")
        batch.drop_column("source_autov3")
