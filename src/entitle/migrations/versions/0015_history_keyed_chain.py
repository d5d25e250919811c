"""History keyed chain and signed checkpoints (issue 15 point 7)

Revision ID: 0015_history
Revises: 0014_my2n
Create Date: 2026-12-02 14:00:00.000000

Adds each link's key check (``history_entries.mac``), the organizations' heads and the signed
checkpoints, then keys the chains that exist: the chain key is derived from the server's secret
key, which is not in the database, so this step reads it from the settings of the process that
runs ``entitle migrate`` (ENTITLE_SECRET_KEY, or the secret key file; made if there is none yet,
as on first use). Each chain is keyed up to its first break, if it has one: an entry that was
already not intact keeps no key check, and verify reports it. docs/security.md ("History
tamper-evidence") says what this can and cannot tell about the time before the upgrade.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import entitle.db


revision = '0015_history'
down_revision = '0014_my2n'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table('history_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mac', sa.String(length=64), nullable=True))
    op.create_table('history_heads',
    sa.Column('org_id', ID, autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('mac', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_history_heads_org_id_organizations')),
    sa.PrimaryKeyConstraint('org_id', name=op.f('pk_history_heads'))
    )
    op.create_table('history_checkpoints',
    sa.Column('id', ID, nullable=False),
    sa.Column('org_id', ID, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('at', entitle.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_history_checkpoints_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_history_checkpoints'))
    )
    with op.batch_alter_table('history_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_history_checkpoints_org_id'), ['org_id'], unique=False)
    key_existing_chains(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('history_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_history_checkpoints_org_id'))
    op.drop_table('history_checkpoints')
    op.drop_table('history_heads')
    with op.batch_alter_table('history_entries', schema=None) as batch_op:
        batch_op.drop_column('mac')


entries = sa.table('history_entries', sa.column('id', ID), sa.column('org_id', ID), sa.column('seq', sa.Integer),
                   sa.column('at', entitle.db.UTCDateTime()), sa.column('actor', sa.String),
                   sa.column('action', sa.String), sa.column('object_type', sa.String),
                   sa.column('object_id', sa.String), sa.column('before', sa.JSON), sa.column('after', sa.JSON),
                   sa.column('prev_hash', sa.String), sa.column('hash', sa.String), sa.column('mac', sa.String))
heads = sa.table('history_heads', sa.column('org_id', ID), sa.column('seq', sa.Integer),
                 sa.column('hash', sa.String), sa.column('mac', sa.String))


def key_existing_chains(conn: sa.Connection) -> None:
    """Key every organization's chain as it stands, up to its first break, and give it a head."""
    from entitle.history import chain

    orgs = [row[0] for row in conn.execute(sa.select(entries.c.org_id).distinct().order_by(entries.c.org_id))]
    if not orgs:
        return  # a fresh install: nothing to key, and no secret key needed yet
    key = chain.chain_key(_secret_key(conn))
    for org_id in orgs:
        check = chain.ChainCheck(org_id)  # the public chain only: there are no key checks yet
        last_seq, last_hash = 0, chain.GENESIS
        while rows := conn.execute(sa.select(entries).where(entries.c.org_id == org_id, entries.c.seq > last_seq)
                                   .order_by(entries.c.seq).limit(BATCH)).all():
            macs = [{"entry_id": row.id, "new_mac": chain.entry_mac(key, org_id=org_id, seq=row.seq, hash=row.hash)}
                    for row in rows if check.add(_Row(row))]
            if macs:
                conn.execute(entries.update().where(entries.c.id == sa.bindparam('entry_id'))
                             .values(mac=sa.bindparam('new_mac')), macs)
            last_seq, last_hash = rows[-1].seq, rows[-1].hash  # the head is the last entry, broken chain or not
        conn.execute(heads.insert().values(org_id=org_id, seq=last_seq, hash=last_hash,
                                           mac=chain.head_mac(key, org_id=org_id, seq=last_seq, hash=last_hash)))


class _Row:
    """A history row read here, as the chain's check reads an entry (no key check yet)."""

    def __init__(self, row: sa.Row[object]) -> None:
        self.__dict__.update(row._mapping)
        self.mac = None


def _secret_key(conn: sa.Connection) -> bytes:
    """The secret key of this process's settings; refused when the signing keys in the database
    were sealed with another one (the chains would be keyed with a key no server has)."""
    from entitle.config import Settings
    from entitle.errors import EntitleError
    from entitle.signing.secrets import load_secret_key, unseal

    secret = load_secret_key(Settings())
    sealed = conn.execute(sa.text("SELECT kid, private_key_encrypted FROM signing_keys ORDER BY id DESC LIMIT 1")).first()
    if sealed is not None:
        try:
            unseal(secret, sealed[1], context=f"signing-key:{sealed[0]}")
        except EntitleError as exc:
            raise RuntimeError("Migration 0015 keys the history with the server's secret key, and this process has "
                               "another one (the signing keys do not open with it): run `entitle migrate` with the "
                               "server's ENTITLE_SECRET_KEY or secret key file.") from exc
    return secret
