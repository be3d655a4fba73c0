"""Feature flags (the model_switching rollout) and the guard's last rollback.

Revision ID: 0005_feature_flags
Revises: 0004_conversations
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_feature_flags"
down_revision = "0004_conversations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No row means "on for everyone": existing installs keep switching as before.
    op.create_table(
        "feature_flags",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="on"),
        sa.Column("percent", sa.Float, nullable=False, server_default="100"),
        sa.Column("allowlist", sa.Text, nullable=False, server_default="[]"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(64)),
        sa.Column("enabled_at", sa.DateTime(timezone=True)),
        sa.Column("rollback_at", sa.DateTime(timezone=True)),
        sa.Column("last_rollback", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("feature_flags")
