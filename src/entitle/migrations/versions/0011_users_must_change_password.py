"""users: a password that must be changed at the next sign-in, and when it was last changed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 09:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('must_change_password', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('password_changed_at', entitle.db.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('must_change_password')
