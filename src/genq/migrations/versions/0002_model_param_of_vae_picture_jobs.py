"""interpolate and sample-vae jobs name their train-vae job `model` (was `model_job`)

The job kinds are now declared once and the parameter is called as its CLI option is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('kind', sa.String), sa.column('params', sa.JSON))
KINDS = ('interpolate', 'sample-vae')


def _rename(old: str, new: str) -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(jobs.c.id, jobs.c.params).where(jobs.c.kind.in_(KINDS))).all()
    for job_id, params in rows:
        if old in params:
            renamed = {(new if key == old else key): value for key, value in params.items()}
            connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(params=renamed))


def upgrade() -> None:
    _rename('model_job', 'model')


def downgrade() -> None:
    _rename('model', 'model_job')
