"""dashboard sessions and evaluation attachments

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

The web dashboard signs a browser in with a token and keeps an HttpOnly session cookie: the table keeps
the sha256 of its secret, the CSRF token of its forms, its expiry and when it was signed out. Phase 2's
contact sheet and report.md are kept beside the evaluation they belong to, for the dashboard to show;
evaluations recorded before this revision have none (their numbers and checks are all shown).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("api_tokens.id"), nullable=True),
        sa.Column("local_user", sa.String(length=128), nullable=True),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_web_sessions_token_id", "web_sessions", ["token_id"])
    op.create_table(
        "evaluation_attachments",
        sa.Column("evaluation_id", sa.Integer(), sa.ForeignKey("evaluations.id"), primary_key=True),
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluation_attachments")
    op.drop_index("ix_web_sessions_token_id", table_name="web_sessions")
    op.drop_table("web_sessions")
