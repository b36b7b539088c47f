"""evaluations: per-system metrics on a prompt set

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('system', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('bench', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('n_prompts', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('outputs_path', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_bench'), ['bench'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_content_hash'), ['content_hash'], unique=True)
        batch_op.create_index(batch_op.f('ix_evaluations_model_version_id'), ['model_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_system'), ['system'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_system'))
        batch_op.drop_index(batch_op.f('ix_evaluations_model_version_id'))
        batch_op.drop_index(batch_op.f('ix_evaluations_content_hash'))
        batch_op.drop_index(batch_op.f('ix_evaluations_bench'))
    op.drop_table('evaluations')
