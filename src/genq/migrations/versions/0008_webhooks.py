"""webhooks: where each job (and group) is notified, and the outbox of deliveries with their attempts

- jobs.notify_url, groups.notify_url: the webhook given at submit; users.notify_url: a user's default
- webhook_deliveries: the outbox, one row per job or group end to notify (written in the transaction of
  that end), due at next_attempt_at; webhook_attempts: each POST's time and HTTP status or error

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('jobs', 'groups', 'users'):
        op.add_column(table, sa.Column('notify_url', sa.Text(), nullable=True))
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.String(length=36), primary_key=True),
        sa.Column('job_id', sa.String(length=36), sa.ForeignKey('jobs.id'), nullable=True, unique=True),
        sa.Column('group_id', sa.String(length=36), sa.ForeignKey('groups.id'), nullable=True, unique=True),
        sa.Column('owner', sa.String(length=64), nullable=True),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_webhook_deliveries_state_due', 'webhook_deliveries', ['state', 'next_attempt_at'])
    op.create_table(
        'webhook_attempts',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('delivery_id', sa.String(length=36), sa.ForeignKey('webhook_deliveries.id'), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('http_status', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
    )
    op.create_index('ix_webhook_attempts_delivery_id', 'webhook_attempts', ['delivery_id'])


def downgrade() -> None:
    op.drop_index('ix_webhook_attempts_delivery_id', 'webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_index('ix_webhook_deliveries_state_due', 'webhook_deliveries')
    op.drop_table('webhook_deliveries')
    for table in ('users', 'groups', 'jobs'):
        op.execute(f'ALTER TABLE {table} DROP COLUMN notify_url')
