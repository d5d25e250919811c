"""My2N per-device payment (issue 14 point 6): how many devices an apartment's paid time was
paid for, and since when each device counts towards its apartment's license

Revision ID: 0013_my2n
Revises: 0012_my2n
Create Date: 2026-12-02 14:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0013_my2n'
down_revision = '0012_my2n'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('my2n_apartments', schema=None) as batch_op:
        # The billable devices the apartment's paid time was paid for with device-years
        # (per-device vouchers); NULL: paid per apartment (apartment-year, card), every device.
        batch_op.add_column(sa.Column('devices_paid_for', sa.Integer(), nullable=True))
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        # When the device last started counting towards its apartment's license (added, moved in,
        # local mode turned off): of an apartment paid for fewer devices, the latest stop first.
        # NULL: since it was created.
        batch_op.add_column(sa.Column('billable_since', entitle.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        batch_op.drop_column('billable_since')
    with op.batch_alter_table('my2n_apartments', schema=None) as batch_op:
        batch_op.drop_column('devices_paid_for')
