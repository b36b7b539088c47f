"""prompts.client and prompts.quarantine: who sent a traffic prompt, and why it may not be trained on

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('quarantine', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_prompts_client'), ['client'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompts_client'))
        batch_op.drop_column('quarantine')
        batch_op.drop_column('client')
