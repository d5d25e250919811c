"""access commander

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 23:52:58.573465
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ac_installations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('uid', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('heartbeat_timeout_seconds', sa.Integer(), nullable=False),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_ac_installations_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ac_installations')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_ac_installations_token_hash')),
    sa.UniqueConstraint('uid', name=op.f('uq_ac_installations_uid'))
    )
    with op.batch_alter_table('ac_installations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ac_installations_org_id'), ['org_id'], unique=False)

    op.create_table('ac_attendance_users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('installation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('monitored', sa.Boolean(), nullable=False),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['installation_id'], ['ac_installations.id'], name=op.f('fk_ac_attendance_users_installation_id_ac_installations')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_ac_attendance_users_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ac_attendance_users')),
    sa.UniqueConstraint('installation_id', 'name', name=op.f('uq_ac_attendance_users_installation_id'))
    )
    with op.batch_alter_table('ac_attendance_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ac_attendance_users_org_id'), ['org_id'], unique=False)

    op.create_table('ac_devices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('installation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('activated_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('connected_since', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['installation_id'], ['ac_installations.id'], name=op.f('fk_ac_devices_installation_id_ac_installations')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_ac_devices_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ac_devices')),
    sa.UniqueConstraint('installation_id', 'serial', name=op.f('uq_ac_devices_installation_id'))
    )
    with op.batch_alter_table('ac_devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ac_devices_org_id'), ['org_id'], unique=False)

    op.create_table('ac_system_users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('installation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['installation_id'], ['ac_installations.id'], name=op.f('fk_ac_system_users_installation_id_ac_installations')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_ac_system_users_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ac_system_users')),
    sa.UniqueConstraint('installation_id', 'name', name=op.f('uq_ac_system_users_installation_id'))
    )
    with op.batch_alter_table('ac_system_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ac_system_users_org_id'), ['org_id'], unique=False)

    op.create_table('ac_licenses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('installation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('license_device', sa.String(length=64), nullable=False),
    sa.Column('packages', sa.JSON(), nullable=False),
    sa.Column('capacity', sa.JSON(), nullable=False),
    sa.Column('added_at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('added_by', sa.String(length=320), nullable=False),
    sa.Column('replaced_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('license_device_activated_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('file', sa.Text(), nullable=False),
    sa.Column('rec_accumulated_us', sa.BigInteger(), nullable=False),
    sa.Column('rec_connected_since', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rec_last_seen', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rec_suspended_at', entitle.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['installation_id'], ['ac_installations.id'], name=op.f('fk_ac_licenses_installation_id_ac_installations')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_ac_licenses_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ac_licenses'))
    )
    with op.batch_alter_table('ac_licenses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ac_licenses_file_sha256'), ['file_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_ac_licenses_installation_id'), ['installation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ac_licenses_org_id'), ['org_id'], unique=False)
        batch_op.create_index('uq_ac_licenses_current', ['installation_id'], unique=True, postgresql_where=sa.text('replaced_at IS NULL'), sqlite_where=sa.text('replaced_at IS NULL'))



def downgrade() -> None:
    with op.batch_alter_table('ac_licenses', schema=None) as batch_op:
        batch_op.drop_index('uq_ac_licenses_current', postgresql_where=sa.text('replaced_at IS NULL'), sqlite_where=sa.text('replaced_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_ac_licenses_org_id'))
        batch_op.drop_index(batch_op.f('ix_ac_licenses_installation_id'))
        batch_op.drop_index(batch_op.f('ix_ac_licenses_file_sha256'))

    op.drop_table('ac_licenses')
    with op.batch_alter_table('ac_system_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ac_system_users_org_id'))

    op.drop_table('ac_system_users')
    with op.batch_alter_table('ac_devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ac_devices_org_id'))

    op.drop_table('ac_devices')
    with op.batch_alter_table('ac_attendance_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ac_attendance_users_org_id'))

    op.drop_table('ac_attendance_users')
    with op.batch_alter_table('ac_installations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ac_installations_org_id'))

    op.drop_table('ac_installations')
