"""finished_threads: graph runs that finished, so finished work is skipped after their checkpoints are pruned;
work_items.adapter: the rewriter version a shared job samples with

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0006'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'finished_threads',
        sa.Column('thread_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('graph', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('result', sa.JSON(), nullable=False),
        sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('pruned_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('thread_id'),
    )
    with op.batch_alter_table('finished_threads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_finished_threads_graph'), ['graph'], unique=False)
        batch_op.create_index(batch_op.f('ix_finished_threads_finished_at'), ['finished_at'], unique=False)
    with op.batch_alter_table('work_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('adapter', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('work_items', schema=None) as batch_op:
        batch_op.drop_column('adapter')
    with op.batch_alter_table('finished_threads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_finished_threads_finished_at'))
        batch_op.drop_index(batch_op.f('ix_finished_threads_graph'))
    op.drop_table('finished_threads')
