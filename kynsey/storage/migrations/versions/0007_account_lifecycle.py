"""Account lifecycle (SPEC F21): disabled accounts; named API tokens with last use and expiry.

Existing tokens keep working: they get an empty name, no expiry, and no last use
until their next request. On SQLite the token table is rebuilt with AUTOINCREMENT,
so a revoked token's id is never given to a new token (the audit log names tokens
by id); PostgreSQL's sequences never reuse ids anyway.

Revision ID: 0007_account_lifecycle
Revises: 0006_audit_tier_width
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_account_lifecycle"
down_revision = "0006_audit_tier_width"
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN on ``users`` (SQLite >= 3.35, PostgreSQL), never a batch copy of it:
# recreating that table under SQLite's foreign keys would cascade-delete every row that points at it.
# Nothing points at ``api_tokens``, so SQLite may copy it.
TOKEN_COLUMNS = ("name", "last_used_at", "expires_at")


def _token_columns() -> list[sa.Column]:
    return [
        sa.Column("name", sa.String(64), nullable=False, server_default=""),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    ]


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True)))
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("api_tokens", recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch:
            for column in _token_columns():
                batch.add_column(column)
    else:
        for column in _token_columns():
            op.add_column("api_tokens", column)


def downgrade() -> None:
    for column in TOKEN_COLUMNS:
        op.execute(sa.text(f"ALTER TABLE api_tokens DROP COLUMN {column}"))
    op.execute(sa.text("ALTER TABLE users DROP COLUMN disabled_at"))
