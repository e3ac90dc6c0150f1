"""the latest auth.md protocol beside v0.1: protocol columns, refresh tokens, signing keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    for table in ('registrations', 'claim_attempts', 'credentials'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('protocol', sa.String(length=10), server_default='v0.1', nullable=False))
    with op.batch_alter_table('claim_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmed_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('confirmed_user_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_claim_attempts_confirmed_user_id_users', 'users', ['confirmed_user_id'], ['id'])
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resource', sa.String(length=500), nullable=True))
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('protocol', sa.String(length=10), nullable=True))
    with op.batch_alter_table('login_links', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_path', sa.String(length=2000), nullable=True))
    op.create_table('refresh_tokens',
        sa.Column('id', BigId, nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('family_id', sa.String(length=40), nullable=False),
        sa.Column('registration_id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('spent_at', sa.DateTime(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['registration_id'], ['registrations.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('digest'))
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refresh_tokens_family_id'), ['family_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refresh_tokens_registration_id'), ['registration_id'], unique=False)
    op.create_table('signing_keys',
        sa.Column('kid', sa.String(length=64), nullable=False),
        sa.Column('alg', sa.String(length=10), nullable=False),
        sa.Column('public_jwk', sa.Text(), nullable=False),
        sa.Column('private_key', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('retired_at', sa.DateTime(), nullable=True),
        sa.Column('publish_until', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('kid'))


def downgrade():
    op.drop_table('signing_keys')
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_tokens_registration_id'))
        batch_op.drop_index(batch_op.f('ix_refresh_tokens_family_id'))
    op.drop_table('refresh_tokens')
    with op.batch_alter_table('login_links', schema=None) as batch_op:
        batch_op.drop_column('next_path')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('protocol')
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_column('resource')
    with op.batch_alter_table('claim_attempts', schema=None) as batch_op:
        batch_op.drop_constraint('fk_claim_attempts_confirmed_user_id_users', type_='foreignkey')
        batch_op.drop_column('confirmed_user_id')
        batch_op.drop_column('confirmed_at')
    for table in ('credentials', 'claim_attempts', 'registrations'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('protocol')
