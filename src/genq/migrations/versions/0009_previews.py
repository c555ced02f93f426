"""previews and GPU figures

- jobs.preview_png, jobs.preview_at: a running job's small preview picture (written with its progress)
- workers.gpu_utilization, workers.gpu_memory_used: NVML's figures at a GPU worker's last heartbeat

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('preview_png', sa.LargeBinary(), nullable=True))
    op.add_column('jobs', sa.Column('preview_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('workers', sa.Column('gpu_utilization', sa.Integer(), nullable=True))
    op.add_column('workers', sa.Column('gpu_memory_used', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.execute('ALTER TABLE workers DROP COLUMN gpu_memory_used')
    op.execute('ALTER TABLE workers DROP COLUMN gpu_utilization')
    op.execute('ALTER TABLE jobs DROP COLUMN preview_at')
    op.execute('ALTER TABLE jobs DROP COLUMN preview_png')
