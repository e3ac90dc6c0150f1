"""console sessions: users.session_generation, login_failures.ip

users.session_generation is copied into a console session at sign-in and bumped on sign-out, a new
password, demotion and disabling, so that every session opened before dies (a copied cookie included).
login_failures gains the client IP: the sign-in throttle counts failures per (IP, account), so that a
stranger's failures never lock the owner out. Failures recorded before have no IP; they count for no one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 08:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ip', sa.String(length=64), nullable=True))
        batch_op.drop_index(batch_op.f('ix_login_failures_email'))
        batch_op.create_index('ix_login_failures_email_ip_created', ['email', 'ip', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_email_ip_created')
        batch_op.create_index(batch_op.f('ix_login_failures_email'), ['email'], unique=False)
        batch_op.drop_column('ip')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
