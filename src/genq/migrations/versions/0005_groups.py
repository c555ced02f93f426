"""groups: jobs submitted as one sweep

- groups: id, name, kind, created, the sweep's definition, its number of jobs
- jobs.group_id, jobs.group_point, jobs.group_index: a job's group, its swept values and place in it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'groups',
        sa.Column('id', sa.String(length=36), primary_key=True),
        sa.Column('name', sa.String(length=200), nullable=True),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('definition', sa.JSON(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
    )
    op.create_index('ix_groups_name', 'groups', ['name'])
    op.add_column('jobs', sa.Column('group_id', sa.String(length=36), nullable=True))
    op.add_column('jobs', sa.Column('group_point', sa.JSON(), nullable=True))
    op.add_column('jobs', sa.Column('group_index', sa.Integer(), nullable=True))
    op.create_index('ix_jobs_group_id', 'jobs', ['group_id'])


def downgrade() -> None:
    op.drop_index('ix_jobs_group_id', 'jobs')
    op.execute('ALTER TABLE jobs DROP COLUMN group_index')
    op.execute('ALTER TABLE jobs DROP COLUMN group_point')
    op.execute('ALTER TABLE jobs DROP COLUMN group_id')
    op.drop_index('ix_groups_name', 'groups')
    op.drop_table('groups')
