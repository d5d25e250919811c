"""My2N site dashboard: a site's apartments in id order; its devices by apartment, kind, local mode

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 03:10:00.000000

``entitle.my2n.board.dashboard`` reads a site's apartments in id order and counts each one's
paid and billable devices in one grouped statement. ``ix_my2n_devices_dashboard`` answers the
count alone (a covering range scan of the site's devices, in apartment order);
``ix_my2n_apartments_site`` gives the site's apartments already in id order, so that neither
the whole table is scanned (SQLite) nor the site's apartments sorted (PostgreSQL).
"""
from __future__ import annotations

from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('my2n_apartments', schema=None) as batch_op:
        batch_op.create_index('ix_my2n_apartments_site', ['site_id', 'id'], unique=False)
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        batch_op.create_index('ix_my2n_devices_dashboard', ['site_id', 'apartment_id', 'kind', 'local_mode'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('my2n_devices', schema=None) as batch_op:
        batch_op.drop_index('ix_my2n_devices_dashboard')
    with op.batch_alter_table('my2n_apartments', schema=None) as batch_op:
        batch_op.drop_index('ix_my2n_apartments_site')
