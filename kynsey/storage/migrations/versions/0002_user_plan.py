"""The plan's migration: add the tier field (plan) to user profiles and map
every existing user to 'standard'.

Revision ID: 0002_user_plan
Revises: 0001_initial_users
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_user_plan"
down_revision = "0001_initial_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("plan", sa.String(64), nullable=True))
    op.execute(sa.text("UPDATE users SET plan = 'standard' WHERE plan IS NULL"))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("plan", existing_type=sa.String(64), nullable=False, server_default="standard")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("plan")
