"""My2N sites, apartments and their devices

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:23:49.394653
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('my2n_sites',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('region', sa.String(length=8), nullable=False),
    sa.Column('model', sa.String(length=16), nullable=False),
    sa.Column('custom_expires_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('model_changed_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_my2n_sites_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_my2n_sites')),
    sa.UniqueConstraint('org_id', 'name', name=op.f('uq_my2n_sites_org_id'))
    )
    with op.batch_alter_table('my2n_sites', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_my2n_sites_org_id'), ['org_id'], unique=False)

    op.create_table('my2n_apartments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('site_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('paid_through', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_my2n_apartments_org_id_organizations')),
    sa.ForeignKeyConstraint(['site_id'], ['my2n_sites.id'], name=op.f('fk_my2n_apartments_site_id_my2n_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_my2n_apartments')),
    sa.UniqueConstraint('site_id', 'name', name=op.f('uq_my2n_apartments_site_id'))
    )
    with op.batch_alter_table('my2n_apartments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_my2n_apartments_org_id'), ['org_id'], unique=False)

    op.create_table('my2n_devices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('site_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('apartment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('serial', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('local_mode', sa.Boolean(), nullable=False),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['apartment_id'], ['my2n_apartments.id'], name=op.f('fk_my2n_devices_apartment_id_my2n_apartments')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_my2n_devices_org_id_organizations')),
    sa.ForeignKeyConstraint(['site_id'], ['my2n_sites.id'], name=op.f('fk_my2n_devices_site_id_my2n_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_my2n_devices')),
    sa.UniqueConstraint('site_id', 'serial', name=op.f('uq_my2n_devices_site_id'))
    )
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        batch_op.create_index('ix_my2n_devices_apartment', ['apartment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_my2n_devices_org_id'), ['org_id'], unique=False)

    op.create_table('my2n_voucher_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key_batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('purchased_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_batch_id'], ['key_batches.id'], name=op.f('fk_my2n_voucher_batches_key_batch_id_key_batches')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_my2n_voucher_batches')),
    sa.UniqueConstraint('key_batch_id', name=op.f('uq_my2n_voucher_batches_key_batch_id'))
    )


def downgrade() -> None:
    op.drop_table('my2n_voucher_batches')
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_my2n_devices_org_id'))
        batch_op.drop_index('ix_my2n_devices_apartment')

    op.drop_table('my2n_devices')
    with op.batch_alter_table('my2n_apartments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_my2n_apartments_org_id'))

    op.drop_table('my2n_apartments')
    with op.batch_alter_table('my2n_sites', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_my2n_sites_org_id'))

    op.drop_table('my2n_sites')
