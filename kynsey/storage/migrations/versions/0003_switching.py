"""Tier switching: the user's active tier, browser sessions and the audit log.

Revision ID: 0003_switching
Revises: 0002_user_plan
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_switching"
down_revision = "0002_user_plan"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("active_tier", sa.String(32), nullable=True))
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False, index=True),
        sa.Column("subject", sa.String(64), index=True),
        sa.Column("from_tier", sa.String(32)),
        sa.Column("to_tier", sa.String(32)),
        sa.Column("result", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("latency_ms", sa.Float),
        sa.Column("request_id", sa.String(64)),
        sa.Column("details", sa.Text),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("web_sessions")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("active_tier")
