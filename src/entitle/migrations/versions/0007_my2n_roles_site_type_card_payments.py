"""My2N site roles, site type, card payments, webhook events

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 02:29:36.668779
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('my2n_card_payments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('site_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('payment_id', sa.String(length=255), nullable=False),
    sa.Column('subscription_id', sa.String(length=255), nullable=True),
    sa.Column('apartments', sa.JSON(), nullable=False),
    sa.Column('amount_minor', sa.Integer(), nullable=True),
    sa.Column('currency', sa.String(length=8), nullable=True),
    sa.Column('paid_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_my2n_card_payments_org_id_organizations')),
    sa.ForeignKeyConstraint(['site_id'], ['my2n_sites.id'], name=op.f('fk_my2n_card_payments_site_id_my2n_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_my2n_card_payments')),
    sa.UniqueConstraint('payment_id', name=op.f('uq_my2n_card_payments_payment_id'))
    )
    with op.batch_alter_table('my2n_card_payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_my2n_card_payments_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_my2n_card_payments_site_id'), ['site_id'], unique=False)

    op.create_table('my2n_payment_plans',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('site_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.String(length=255), nullable=True),
    sa.Column('card', sa.String(length=255), nullable=True),
    sa.Column('card_label', sa.String(length=64), nullable=True),
    sa.Column('recurring', sa.Boolean(), nullable=False),
    sa.Column('subscription_id', sa.String(length=255), nullable=True),
    sa.Column('apartments', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('activated_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deactivated_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_my2n_payment_plans_org_id_organizations')),
    sa.ForeignKeyConstraint(['site_id'], ['my2n_sites.id'], name=op.f('fk_my2n_payment_plans_site_id_my2n_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_my2n_payment_plans')),
    sa.UniqueConstraint('site_id', name=op.f('uq_my2n_payment_plans_site_id'))
    )
    with op.batch_alter_table('my2n_payment_plans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_my2n_payment_plans_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_my2n_payment_plans_subscription_id'), ['subscription_id'], unique=False)

    op.create_table('my2n_webhook_events',
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('provider_type', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('received_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['my2n_sites.id'], name=op.f('fk_my2n_webhook_events_site_id_my2n_sites')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_my2n_webhook_events'))
    )
    op.create_table('my2n_site_roles',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('site_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('apartment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('payments', sa.Boolean(), nullable=False),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['apartment_id'], ['my2n_apartments.id'], name=op.f('fk_my2n_site_roles_apartment_id_my2n_apartments')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_my2n_site_roles_org_id_organizations')),
    sa.ForeignKeyConstraint(['site_id'], ['my2n_sites.id'], name=op.f('fk_my2n_site_roles_site_id_my2n_sites')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_my2n_site_roles_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_my2n_site_roles')),
    sa.UniqueConstraint('site_id', 'user_id', name=op.f('uq_my2n_site_roles_site_id'))
    )
    with op.batch_alter_table('my2n_site_roles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_my2n_site_roles_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_my2n_site_roles_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('my2n_sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('site_type', sa.String(length=32), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('my2n_sites', schema=None) as batch_op:
        batch_op.drop_column('site_type')

    with op.batch_alter_table('my2n_site_roles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_my2n_site_roles_user_id'))
        batch_op.drop_index(batch_op.f('ix_my2n_site_roles_org_id'))

    op.drop_table('my2n_site_roles')
    op.drop_table('my2n_webhook_events')
    with op.batch_alter_table('my2n_payment_plans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_my2n_payment_plans_subscription_id'))
        batch_op.drop_index(batch_op.f('ix_my2n_payment_plans_org_id'))

    op.drop_table('my2n_payment_plans')
    with op.batch_alter_table('my2n_card_payments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_my2n_card_payments_site_id'))
        batch_op.drop_index(batch_op.f('ix_my2n_card_payments_org_id'))

    op.drop_table('my2n_card_payments')
