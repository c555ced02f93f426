"""Migrations carry existing jobs along (on both backends)."""
from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, text

from genq.core.store.db import _alembic_config


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
    command.upgrade(_alembic_config(url), "0002")
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT id, params FROM jobs")).all())
    assert json.loads(stored["a"]) == {"model": "m1", "steps": 4}
    assert json.loads(stored["b"]) == {"epochs": 1}
    command.downgrade(_alembic_config(url), "0001")
    with engine.connect() as conn:
        assert json.loads(conn.execute(text("SELECT params FROM jobs WHERE id = 'a'")).scalar()) == {"model_job": "m1", "steps": 4}


def test_jobs_waiting_for_unfinished_jobs_become_waiting_in_0003(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    command.upgrade(_alembic_config(url), "0002")
    engine = create_engine(url)
    rows = (("dep", "queued", None, "2026-11-27 00:00:00"), ("waits", "queued", "dep", None),
            ("sent", "queued", "dep", "2026-11-27 00:00:01"), ("done", "succeeded", None, "2026-11-27 00:00:00"),
            ("released", "queued", "done", None))
    with engine.begin() as conn:
        for job_id, status, depends_on, dispatched in rows:
            conn.execute(text("INSERT INTO jobs (id, kind, status, params, attempts, cancel_requested, submitted_at, "
                              "progress_done, progress_total, depends_on, dispatched_at) VALUES (:id, 'train-vae', "
                              ":status, '{}', 0, 0, '2026-11-27 00:00:00', 0, 0, :dep, :sent)"),
                         {"id": job_id, "status": status, "dep": depends_on, "sent": dispatched})
    command.upgrade(_alembic_config(url), "0003")
    with engine.connect() as conn:
        status = dict(conn.execute(text("SELECT id, status FROM jobs")).all())
        sent = dict(conn.execute(text("SELECT id, last_sent_at FROM jobs")).all())
    assert status == {"dep": "queued", "waits": "waiting", "sent": "queued", "done": "succeeded", "released": "queued"}
    assert sent["sent"] is not None
    command.downgrade(_alembic_config(url), "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = 'waits'")).scalar() == "queued"


def test_the_migrations_build_what_the_models_declare(database_url):
    """Every table, column and index of core/store/models.py comes from a migration, and nothing more."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from genq.core.store.models import Base

    with create_engine(database_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
