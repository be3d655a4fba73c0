"""Message versions (SPEC F18): a conversation is a tree of messages, one path of it shown.

Each message gets ``parent_id``, the message it answers or follows (NULL for
the first one). Versions of a message are its siblings: an edited question is
a new user message beside the old one, a regenerated reply a new assistant
message beside the old one; nothing is overwritten. The conversation remembers
the leaf it shows (``current_leaf_id``); the path from the root to it is what
the page shows and what the next turn sends as history.

Existing conversations become a linear chain: each message's parent is the one
before it (by ``seq``), and the last message is the shown leaf.

``current_leaf_id`` carries no foreign key: one from conversations to messages
would make the two tables point at each other, and every delete and bulk insert
would have to break the cycle. The chat code sets it in the same transaction as
the rows it names.

Revision ID: 0009_message_versions
Revises: 0008_upgrade_requests
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_message_versions"
down_revision = "0008_upgrade_requests"
branch_labels = None
depends_on = None

CHAIN = """
UPDATE messages SET parent_id = (
    SELECT earlier.id FROM messages AS earlier
    WHERE earlier.conversation_id = messages.conversation_id AND earlier.seq < messages.seq
    ORDER BY earlier.seq DESC LIMIT 1
)
"""
LEAVES = """
UPDATE conversations SET current_leaf_id = (
    SELECT m.id FROM messages AS m WHERE m.conversation_id = conversations.id ORDER BY m.seq DESC LIMIT 1
)
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Plain ADD COLUMN (a REFERENCES clause is allowed with a NULL default), never a batch
        # copy: recreating ``messages`` would be slow on a long history and gains nothing.
        op.execute(
            sa.text("ALTER TABLE messages ADD COLUMN parent_id VARCHAR(32) REFERENCES messages (id) ON DELETE CASCADE")
        )
    else:
        op.add_column("messages", sa.Column("parent_id", sa.String(32)))
        op.create_foreign_key(
            "fk_messages_parent_id", "messages", "messages", ["parent_id"], ["id"], ondelete="CASCADE"
        )
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"])
    op.add_column("conversations", sa.Column("current_leaf_id", sa.String(32)))
    op.execute(sa.text(CHAIN))
    op.execute(sa.text(LEAVES))


def downgrade() -> None:
    # The versions stay, as plain messages in the order they were written; which one was shown is lost.
    op.execute(sa.text("ALTER TABLE conversations DROP COLUMN current_leaf_id"))
    op.drop_index("ix_messages_parent_id", "messages")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_messages_parent_id", "messages", type_="foreignkey")
    op.execute(sa.text("ALTER TABLE messages DROP COLUMN parent_id"))
