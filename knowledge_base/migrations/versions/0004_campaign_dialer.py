"""campaigns: calling window, retry policy, contact claims, call attempts, do-not-call list

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 17:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_note', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('window_start', sa.String(length=5), nullable=False, server_default='09:00'))
        batch_op.add_column(sa.Column('window_end', sa.String(length=5), nullable=False, server_default='20:00'))
        batch_op.add_column(sa.Column('weekdays', sa.JSON(), nullable=False, server_default='[1, 2, 3, 4, 5, 6, 7]'))
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=False, server_default='Asia/Shanghai'))
        batch_op.add_column(sa.Column('max_attempts', sa.Integer(), nullable=False, server_default='3'))
        batch_op.add_column(sa.Column('retry_after_s', sa.Integer(), nullable=False, server_default='7200'))
    with op.batch_alter_table('campaign_contact', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_outcome', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('source_line', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_campaign_contact_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_campaign_contact_next_attempt_at'), ['next_attempt_at'], unique=False)
    op.create_table(
        'call_attempt',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('contact_id', sa.Integer(), nullable=False),
        sa.Column('call_id', sa.String(length=128), nullable=False),
        sa.Column('driver', sa.String(length=16), nullable=False),
        sa.Column('worker', sa.String(length=64), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('ended_at', sa.DateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['contact_id'], ['campaign_contact.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_call_attempt_campaign_id', 'call_attempt', ['campaign_id'])
    op.create_index('ix_call_attempt_contact_id', 'call_attempt', ['contact_id'])
    op.create_index('ix_call_attempt_call_id', 'call_attempt', ['call_id'])
    op.create_table(
        'do_not_call',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('phone', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.String(length=200), nullable=False),
        sa.Column('added_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('phone'),
    )


def downgrade() -> None:
    op.drop_table('do_not_call')
    op.drop_index('ix_call_attempt_call_id', table_name='call_attempt')
    op.drop_index('ix_call_attempt_contact_id', table_name='call_attempt')
    op.drop_index('ix_call_attempt_campaign_id', table_name='call_attempt')
    op.drop_table('call_attempt')
    with op.batch_alter_table('campaign_contact', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_contact_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_campaign_contact_status'))
        for column in ('source_line', 'claimed_by', 'last_outcome', 'next_attempt_at'):
            batch_op.drop_column(column)
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        for column in ('retry_after_s', 'max_attempts', 'timezone', 'weekdays', 'window_end', 'window_start', 'status_note'):
            batch_op.drop_column(column)
