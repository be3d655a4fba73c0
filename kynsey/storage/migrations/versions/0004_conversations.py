"""Conversations and their messages, saved as replies stream.

Revision ID: 0004_conversations
Revises: 0003_switching
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_conversations"
down_revision = "0003_switching"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="complete"),
        sa.Column("tier", sa.String(32)),
        sa.Column("model", sa.String(200)),
        sa.Column("fallback_from", sa.String(32)),
        sa.Column("fallback_reason", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("tokens", sa.Integer),
        sa.Column("tokens_per_s", sa.Float),
        sa.Column("load_ms", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_messages_conversation_seq", "messages")
    op.drop_table("messages")
    op.drop_table("conversations")
