"""Migrations carry existing jobs along (on both backends)."""
from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, text

from genq.core.store.db import _alembic_config, upgrade


def test_vae_picture_jobs_keep_their_model_through_0002(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    command.upgrade(_alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        for job_id, kind, params in (("a", "interpolate", {"model_job": "m1", "steps": 4}),
                                     ("b", "train-vae", {"epochs": 1})):
            conn.execute(text("INSERT INTO jobs (id, kind, status, params, attempts, cancel_requested, submitted_at, "
                              "progress_done, progress_total) VALUES (:id, :kind, 'queued', :params, 0, 0, "
                              "'2026-11-27 00:00:00', 0, 0)"), {"id": job_id, "kind": kind, "params": json.dumps(params)})
    assert upgrade(url) == ("0001", "0002")
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT id, params FROM jobs")).all())
    assert json.loads(stored["a"]) == {"model": "m1", "steps": 4}
    assert json.loads(stored["b"]) == {"epochs": 1}
    command.downgrade(_alembic_config(url), "0001")
    with engine.connect() as conn:
        assert json.loads(conn.execute(text("SELECT params FROM jobs WHERE id = 'a'")).scalar()) == {"model_job": "m1", "steps": 4}
