"""Upgrade requests (SPEC F19): a user asks for a plan, an admin approves or declines.

A partial unique index keeps at most one pending request per user, on SQLite and
PostgreSQL alike, so two requests sent at once cannot both be stored.

Revision ID: 0008_upgrade_requests
Revises: 0007_account_lifecycle
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_upgrade_requests"
down_revision = "0007_account_lifecycle"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "upgrade_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("decided_by", sa.String(64)),
        sqlite_autoincrement=True,  # ids are never reused: the audit log names requests by id
    )
    op.create_index("ix_upgrade_requests_user_id", "upgrade_requests", ["user_id"])
    op.create_index("ix_upgrade_requests_status", "upgrade_requests", ["status"])
    op.create_index(
        "uq_upgrade_requests_pending",
        "upgrade_requests",
        ["user_id"],
        unique=True,
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_table("upgrade_requests")
