"""ac_devices: room in each page for heartbeat updates (PostgreSQL)

Heartbeats rewrite ``last_seen`` of thousands of devices a second (docs/access-commander.md,
"Heartbeats: the write path"). With free space left in each page, PostgreSQL updates a row in
place of its page without touching the table's three indexes (a HOT update): in the heartbeat
benchmark that makes a flush of 10,000 devices about a fifth cheaper and keeps the indexes from
bloating. SQLite has no such setting.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 00:30:00
"""
from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE ac_devices SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE ac_devices RESET (fillfactor)")
