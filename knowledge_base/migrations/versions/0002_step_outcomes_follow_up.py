"""step outcomes declared in the knowledge base; staff follow-ups on conversations

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# What the engine used to hard-code by step code (actions/script_engine.py before 0002): existing terminal
# steps keep their meaning; any other terminal step was recorded as completed. The dispute path of the demo's
# 业务办理回访 was recorded as completed too, which was the defect: it becomes disputed.
_BY_CODE = {
    "callback_close": "callback",
    "wrong_person_close": "wrong_person",
    "refuse_close": "refused",
    "handoff": "handed_over",
    "complaint_close": "complained",
    "not_own_close": "disputed",
}


def upgrade() -> None:
    with op.batch_alter_table('script_step', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outcome', sa.String(length=32), nullable=True))
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('follow_up', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('follow_up_note', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('follow_up_closed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('follow_up_closed_at', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_conversation_follow_up'), ['follow_up'], unique=False)
    step = sa.table('script_step', sa.column('code', sa.String), sa.column('terminal', sa.Boolean),
                    sa.column('outcome', sa.String))
    for code, outcome in _BY_CODE.items():
        op.execute(step.update().where(step.c.code == code, step.c.terminal.is_(True)).values(outcome=outcome))
    op.execute(step.update().where(step.c.code == 'not_own_handling').values(outcome='disputed'))
    op.execute(step.update().where(step.c.terminal.is_(True), step.c.outcome.is_(None)).values(outcome='completed'))


def downgrade() -> None:
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversation_follow_up'))
        batch_op.drop_column('follow_up_closed_at')
        batch_op.drop_column('follow_up_closed_by')
        batch_op.drop_column('follow_up_note')
        batch_op.drop_column('follow_up')
    with op.batch_alter_table('script_step', schema=None) as batch_op:
        batch_op.drop_column('outcome')
