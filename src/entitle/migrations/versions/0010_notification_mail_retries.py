"""notifications: mail retries (attempts, and the lease or back-off before the next one)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 04:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mail_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('mail_next_at', entitle.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('mail_next_at')
        batch_op.drop_column('mail_attempts')
