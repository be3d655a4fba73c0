"""Account lifecycle (SPEC F21): disabled accounts; named API tokens with last use and expiry.

Existing tokens keep working: they get an empty name, no expiry, and no last use
until their next request.

Revision ID: 0007_account_lifecycle
Revises: 0006_audit_tier_width
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_account_lifecycle"
down_revision = "0006_audit_tier_width"
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN (SQLite >= 3.35, PostgreSQL), never a batch copy of ``users``:
# recreating that table under SQLite's foreign keys would cascade-delete every row that points at it.
TOKEN_COLUMNS = ("name", "last_used_at", "expires_at")


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True)))
    op.add_column("api_tokens", sa.Column("name", sa.String(64), nullable=False, server_default=""))
    op.add_column("api_tokens", sa.Column("last_used_at", sa.DateTime(timezone=True)))
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for column in TOKEN_COLUMNS:
        op.execute(sa.text(f"ALTER TABLE api_tokens DROP COLUMN {column}"))
    op.execute(sa.text("ALTER TABLE users DROP COLUMN disabled_at"))
