"""My2N billing as a subscription: the site's billing year, automatic use of credit, what each
card payment was for

Revision ID: 0012_my2n
Revises: 0011
Create Date: 2026-12-02 08:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0012_my2n'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('my2n_payment_plans', schema=None) as batch_op:
        # The end of the site's current billing year: the anniversary recurring payment renews at.
        batch_op.add_column(sa.Column('period_end', entitle.db.UTCDateTime(timezone=True), nullable=True))
        # When a charge of recurring payment was first declined (cleared once one is paid): the
        # retry window of apartments not paid yet runs from then.
        batch_op.add_column(sa.Column('charge_failed_at', entitle.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('my2n_sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_credit', sa.Boolean(), server_default=sa.true(), nullable=False))
    with op.batch_alter_table('my2n_card_payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('period_end', entitle.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('my2n_card_payments', schema=None) as batch_op:
        batch_op.drop_column('period_end')
        batch_op.drop_column('purpose')
    with op.batch_alter_table('my2n_sites', schema=None) as batch_op:
        batch_op.drop_column('auto_credit')
    with op.batch_alter_table('my2n_payment_plans', schema=None) as batch_op:
        batch_op.drop_column('charge_failed_at')
        batch_op.drop_column('period_end')
