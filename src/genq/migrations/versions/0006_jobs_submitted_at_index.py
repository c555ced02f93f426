"""jobs: an index on (submitted_at, id), the order of the dashboard's jobs page and `client list`

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_submitted_at_id', 'jobs', ['submitted_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_jobs_submitted_at_id', table_name='jobs')
