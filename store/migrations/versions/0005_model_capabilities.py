"""model_capabilities: what a chat model was measured able to do, so no process probes it again

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'model_capabilities',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('capability', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('probe', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('asked', sa.Integer(), nullable=False),
        sa.Column('valid', sa.Integer(), nullable=False),
        sa.Column('capable', sa.Boolean(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('model', 'capability', 'probe', name='uq_model_capability'),
    )
    with op.batch_alter_table('model_capabilities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_capabilities_model'), ['model'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_capabilities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_capabilities_model'))
    op.drop_table('model_capabilities')
