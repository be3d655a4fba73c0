"""Widen the audit log's tier columns to what a request may name (64 characters).

A switch to a 33-64 character tier name is refused as unknown, and the refusal
is audited with the name as asked; at 32 characters PostgreSQL rejected the
audit row (a 500). SQLite does not enforce VARCHAR lengths, so only
PostgreSQL's columns change.

Revision ID: 0006_audit_tier_width
Revises: 0005_feature_flags
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_audit_tier_width"
down_revision = "0005_feature_flags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in ("from_tier", "to_tier"):
        op.alter_column("audit_log", column, type_=sa.String(64), existing_type=sa.String(32))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in ("from_tier", "to_tier"):
        op.alter_column("audit_log", column, type_=sa.String(32), existing_type=sa.String(64))
