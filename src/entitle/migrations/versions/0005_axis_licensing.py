"""AXIS licensing: products per organization, devices, allocations, compensation remainders, hardware

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 22:46:57.287029
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('axis_hardware',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('serial', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('license_type', sa.String(length=32), nullable=False),
    sa.Column('preloaded_units', sa.Integer(), nullable=False),
    sa.Column('registered_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_axis_hardware_org_id_organizations')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_axis_hardware_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_axis_hardware')),
    sa.UniqueConstraint('serial', name=op.f('uq_axis_hardware_serial'))
    )
    with op.batch_alter_table('axis_hardware', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_axis_hardware_org_id'), ['org_id'], unique=False)

    op.create_table('axis_products',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('registered_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('trial_ends_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('subscription_start', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('started_by', sa.String(length=320), nullable=True),
    sa.Column('growth_flagged_year', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_axis_products_org_id_organizations')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_axis_products_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_axis_products')),
    sa.UniqueConstraint('org_id', 'product_id', name=op.f('uq_axis_products_org_id'))
    )
    with op.batch_alter_table('axis_products', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_axis_products_org_id'), ['org_id'], unique=False)

    op.create_table('axis_allocations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('license_type', sa.String(length=32), nullable=False),
    sa.Column('sku_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('first_year', sa.Integer(), nullable=False),
    sa.Column('years', sa.Integer(), nullable=False),
    sa.Column('units', sa.Integer(), nullable=False),
    sa.Column('compensation_days', sa.Integer(), nullable=False),
    sa.Column('compensation_units', sa.Integer(), nullable=False),
    sa.Column('allocated_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=320), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_axis_allocations_org_id_organizations')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_axis_allocations_product_id_products')),
    sa.ForeignKeyConstraint(['sku_id'], ['skus.id'], name=op.f('fk_axis_allocations_sku_id_skus')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_axis_allocations'))
    )
    with op.batch_alter_table('axis_allocations', schema=None) as batch_op:
        batch_op.create_index('ix_axis_allocations_product', ['org_id', 'product_id'], unique=False)

    op.create_table('axis_compensation_remainders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sku_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('license_days', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_axis_compensation_remainders_org_id_organizations')),
    sa.ForeignKeyConstraint(['sku_id'], ['skus.id'], name=op.f('fk_axis_compensation_remainders_sku_id_skus')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_axis_compensation_remainders')),
    sa.UniqueConstraint('org_id', 'sku_id', name=op.f('uq_axis_compensation_remainders_org_id'))
    )
    op.create_table('axis_devices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('system_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('serial', sa.String(length=128), nullable=False),
    sa.Column('license_type', sa.String(length=32), nullable=False),
    sa.Column('hardware_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('added_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('removed_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['hardware_id'], ['axis_hardware.id'], name=op.f('fk_axis_devices_hardware_id_axis_hardware')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_axis_devices_org_id_organizations')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_axis_devices_product_id_products')),
    sa.ForeignKeyConstraint(['system_id'], ['systems.id'], name=op.f('fk_axis_devices_system_id_systems')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_axis_devices')),
    sa.UniqueConstraint('system_id', 'serial', name=op.f('uq_axis_devices_system_id'))
    )
    with op.batch_alter_table('axis_devices', schema=None) as batch_op:
        batch_op.create_index('ix_axis_devices_need', ['org_id', 'product_id', 'license_type', 'added_at', 'removed_at', 'hardware_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('axis_devices', schema=None) as batch_op:
        batch_op.drop_index('ix_axis_devices_need')

    op.drop_table('axis_devices')
    op.drop_table('axis_compensation_remainders')
    with op.batch_alter_table('axis_allocations', schema=None) as batch_op:
        batch_op.drop_index('ix_axis_allocations_product')

    op.drop_table('axis_allocations')
    with op.batch_alter_table('axis_products', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_axis_products_org_id'))

    op.drop_table('axis_products')
    with op.batch_alter_table('axis_hardware', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_axis_hardware_org_id'))

    op.drop_table('axis_hardware')
