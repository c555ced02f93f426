"""leases on the database clock, the waiting state, the attempt of each log line

- jobs.lease_until: a running job's lease, renewed by its heartbeat
- jobs.dispatched_at becomes jobs.last_sent_at: when a wake-up was last sent (the reconciler re-sends)
- jobs that wait for an unfinished job move from `queued` to the new `waiting` state
- job_logs.attempt: which run wrote the line
- jobs.time_limit_s, retries, failed_runs, run_after, idempotency_key: limits and retries a user sets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('status', sa.String),
                sa.column('depends_on', sa.String), sa.column('last_sent_at', sa.DateTime(timezone=True)))
UNFINISHED = ('queued', 'running', 'waiting')


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 has RENAME and DROP COLUMN): a batch copy of `jobs` would
    # drop a table that other tables reference.
    op.execute('ALTER TABLE jobs RENAME COLUMN dispatched_at TO last_sent_at')
    op.add_column('jobs', sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_jobs_lease_until', 'jobs', ['lease_until'])
    op.add_column('job_logs', sa.Column('attempt', sa.Integer(), nullable=True))
    op.add_column('jobs', sa.Column('time_limit_s', sa.Float(), nullable=True))
    op.add_column('jobs', sa.Column('retries', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('jobs', sa.Column('failed_runs', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('jobs', sa.Column('run_after', sa.DateTime(timezone=True), nullable=True))
    op.add_column('jobs', sa.Column('idempotency_key', sa.String(length=200), nullable=True))
    op.create_index('ix_jobs_idempotency_key', 'jobs', ['idempotency_key'], unique=True)
    dependency = sa.table('jobs', sa.column('id', sa.String), sa.column('status', sa.String)).alias('dependency')
    unfinished_dependency = sa.select(dependency.c.id).where(
        dependency.c.id == jobs.c.depends_on, dependency.c.status.in_(UNFINISHED)).exists()
    op.get_bind().execute(sa.update(jobs).where(jobs.c.status == 'queued', jobs.c.last_sent_at.is_(None),
                                                unfinished_dependency).values(status='waiting'))


def downgrade() -> None:
    op.get_bind().execute(sa.update(jobs).where(jobs.c.status == 'waiting').values(status='queued', last_sent_at=None))
    op.drop_index('ix_jobs_idempotency_key', 'jobs')
    for column in ('idempotency_key', 'run_after', 'failed_runs', 'retries', 'time_limit_s'):
        op.execute(f'ALTER TABLE jobs DROP COLUMN {column}')
    op.execute('ALTER TABLE job_logs DROP COLUMN attempt')
    op.drop_index('ix_jobs_lease_until', 'jobs')
    op.execute('ALTER TABLE jobs DROP COLUMN lease_until')
    op.execute('ALTER TABLE jobs RENAME COLUMN last_sent_at TO dispatched_at')
