"""the worker registry, a queue and a priority on every job, the device of every claimed run

- workers: one row per worker process run (name host:gpu0, device, queues, state, last seen, job)
- jobs.queue, jobs.priority (0..9, higher first): where a job is sent and in which order
- job_events.device: the device a claimed run ran on

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'workers',
        sa.Column('id', sa.String(length=36), primary_key=True),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('device', sa.String(length=32), nullable=False),
        sa.Column('device_name', sa.String(length=255), nullable=True),
        sa.Column('device_memory', sa.BigInteger(), nullable=True),
        sa.Column('queues', sa.JSON(), nullable=False),
        sa.Column('versions', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('current_job', sa.String(length=36), nullable=True),
        sa.Column('jobs_done', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_workers_name', 'workers', ['name'])
    op.create_index('ix_workers_state', 'workers', ['state'])
    op.create_index('ix_workers_last_seen', 'workers', ['last_seen'])
    op.add_column('jobs', sa.Column('queue', sa.String(length=64), nullable=False, server_default='gpu'))
    op.add_column('jobs', sa.Column('priority', sa.Integer(), nullable=False, server_default='5'))
    op.create_index('ix_jobs_status_kind_queue', 'jobs', ['status', 'kind', 'queue'])
    op.add_column('job_events', sa.Column('device', sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.execute('ALTER TABLE job_events DROP COLUMN device')
    op.drop_index('ix_jobs_status_kind_queue', 'jobs')
    op.execute('ALTER TABLE jobs DROP COLUMN priority')
    op.execute('ALTER TABLE jobs DROP COLUMN queue')
    op.drop_index('ix_workers_last_seen', 'workers')
    op.drop_index('ix_workers_state', 'workers')
    op.drop_index('ix_workers_name', 'workers')
    op.drop_table('workers')
