"""users and owners: who submitted each job and group, and the server's users

- users: name, sha256 of the API token, admin flag, running and queued limits, webhook secret,
  created and revoked times
- jobs.owner, groups.owner: nullable, so rows older than this revision keep no owner; jobs are indexed
  by (owner, status): a user's jobs, and how many of them run, counted at each claim of a limited user

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('name', sa.String(length=64), primary_key=True),
        sa.Column('token_sha256', sa.String(length=64), nullable=False, unique=True),
        sa.Column('admin', sa.Boolean(), nullable=False),
        sa.Column('max_running', sa.Integer(), nullable=True),
        sa.Column('max_queued', sa.Integer(), nullable=True),
        sa.Column('webhook_secret', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column('jobs', sa.Column('owner', sa.String(length=64), nullable=True))
    op.create_index('ix_jobs_owner_status', 'jobs', ['owner', 'status'])
    op.add_column('groups', sa.Column('owner', sa.String(length=64), nullable=True))
    op.create_index('ix_groups_owner', 'groups', ['owner'])


def downgrade() -> None:
    op.drop_index('ix_groups_owner', 'groups')
    op.execute('ALTER TABLE groups DROP COLUMN owner')
    op.drop_index('ix_jobs_owner_status', 'jobs')
    op.execute('ALTER TABLE jobs DROP COLUMN owner')
    op.drop_table('users')
