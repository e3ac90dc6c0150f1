"""drop indexes the composite registration indexes cover

ix_registrations_{created_at,iss,status,type} duplicate the first column of ix_registrations_created_id,
_iss_created, _status_created and _type_created; every registration wrote all of them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 07:23:21.682238

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registrations_created_at'))
        batch_op.drop_index(batch_op.f('ix_registrations_iss'))
        batch_op.drop_index(batch_op.f('ix_registrations_status'))
        batch_op.drop_index(batch_op.f('ix_registrations_type'))


def downgrade():
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registrations_type'), ['type'], unique=False)
        batch_op.create_index(batch_op.f('ix_registrations_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_registrations_iss'), ['iss'], unique=False)
        batch_op.create_index(batch_op.f('ix_registrations_created_at'), ['created_at'], unique=False)
