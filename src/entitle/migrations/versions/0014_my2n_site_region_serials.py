"""My2N region per site, one device serial per organization (issue 14 points 8 and 9)

The region column of ``my2n_sites`` exists since 0006 (it was copied from the organization);
it now belongs to the site and needs no change here.

A device serial becomes unique within an organization's sites: ``uq_my2n_devices_org_id`` on
(org_id, serial). Data written before could hold the same serial on two sites of one
organization; the oldest row (lowest id) keeps the serial, and every later one is renamed
``<serial>#dup-<id>`` (cut to fit 128 characters), nothing deleted, each renaming logged as a
warning, so that the company's admin sees the device and corrects it (docs/my2n.md).

Revision ID: 0014_my2n
Revises: 0013_my2n
Create Date: 2026-12-02 14:00:00.000000
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

import entitle.db  # noqa: F401


revision = '0014_my2n'
down_revision = '0013_my2n'
branch_labels = None
depends_on = None

SERIAL_MAX = 128
log = logging.getLogger("entitle.migrations")


def _rename_duplicates() -> None:
    devices = sa.table('my2n_devices', sa.column('id', sa.BigInteger), sa.column('org_id', sa.BigInteger),
                       sa.column('site_id', sa.BigInteger), sa.column('serial', sa.String))
    older = devices.alias('older')
    conn = op.get_bind()
    later = conn.execute(
        sa.select(devices.c.id, devices.c.org_id, devices.c.site_id, devices.c.serial)
        .where(sa.exists().where(older.c.org_id == devices.c.org_id, older.c.serial == devices.c.serial,
                                 older.c.id < devices.c.id))
        .order_by(devices.c.id)).all()
    for device_id, org_id, site_id, serial in later:
        suffix = f"#dup-{device_id}"
        renamed = serial[:SERIAL_MAX - len(suffix)] + suffix
        conn.execute(devices.update().where(devices.c.id == device_id).values(serial=renamed))
        log.warning("My2N device %s of organization %s was on two sites; on site %s it is renamed %s "
                    "(the oldest keeps the serial).", serial, org_id, site_id, renamed)


def upgrade() -> None:
    _rename_duplicates()
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_my2n_devices_org_id'), ['org_id', 'serial'])


def downgrade() -> None:
    # The devices renamed by the upgrade keep their new serials.
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_my2n_devices_org_id'), type_='unique')
