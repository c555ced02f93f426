"""The dashboard in process (Starlette's TestClient) over a real SQLite store: security headers, the
token, CSRF, artifacts only through the index, escaping, /api shapes and /metrics."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from genq.client.render import job_summary
from genq.core.config import load_settings
from genq.core.images import png_bytes
from genq.core.kinds.train_vae import TrainVAE
from genq.core.store.artifacts import open_artifact_store
from genq.core.store.db import make_engine, session_factory, upgrade
from genq.core.store.jobs import JobStore
from genq.core.store.models import ArtifactRow, JobRow, Metric

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def installation(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'genq.sqlite3'}"
    upgrade(database_url)
    settings = load_settings({"GENQ_HOME": str(tmp_path), "GENQ_DATABASE_URL": database_url,
                              "GENQ_BROKER_URL": "redis://127.0.0.1:6379/0"})
    return settings, JobStore(session_factory(make_engine(database_url)), settings.queue_for)


def add_job(store: JobStore, **values) -> JobRow:
    job = store.create(TrainVAE(epochs=1).with_seed())
    if values:
        with store.sessions() as session:
            session.execute(update(JobRow).where(JobRow.id == job.id).values(**values))
            session.commit()
    return store.get(job.id)


def add_artifact(settings, store: JobStore, job_id: str, name: str, data: bytes, media_type: str | None = None) -> None:
    stored = open_artifact_store(settings.artifact_root).put(job_id, name, data, media_type)
    with store.sessions() as session:
        session.add(ArtifactRow(job_id=job_id, name=stored.name, relative_path=stored.relative_path,
                             media_type=stored.media_type, size=stored.size, sha256=stored.sha256))
        session.commit()


def dashboard(settings, token: str | None = None) -> TestClient:
    """The dashboard in process, not signed in: every request needs `token` (default: the home's)."""
    from genq.client.ui.app import make_app

    return TestClient(make_app(settings, token=token))


def home_token(settings) -> str:
    from genq.client.ui.security import token_file

    return token_file(settings).read_text().strip()


def browser(settings) -> TestClient:
    """The dashboard as its owner opens it: the home's token (GENQ_HOME/ui/token) given once as `?token=`,
    as in the URL `client ui` prints, which leaves the cookie."""
    web = dashboard(settings)
    assert web.get("/", params={"token": home_token(settings)}).status_code == 200
    return web


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


def test_every_page_answers_with_the_security_headers(installation):
    settings, store = installation
    job = add_job(store)
    web = browser(settings)
    for path in ("/", f"/jobs/{job.id}", "/workers", "/submit", "/submit?kind=train-vae", "/api/jobs", "/metrics"):
        response = web.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-content-type-options"] == "nosniff"
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "img-src 'self' data:" in policy and "unsafe-inline" not in policy


def test_a_prompt_with_markup_and_escape_codes_is_shown_as_text(installation):
    settings, store = installation
    job = add_job(store, params={"prompt": SCRIPT + "\x1b]0;owned\x07"}, error=SCRIPT)
    web = browser(settings)
    for page in (web.get("/").text, web.get(f"/jobs/{job.id}").text):
        assert SCRIPT not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "\x1b" not in page


def test_api_shapes_equal_what_json_prints(installation):
    settings, store = installation
    jobs = [add_job(store) for _ in range(3)]
    web = browser(settings)
    listed = web.get("/api/jobs", params={"limit": 2}).json()
    assert listed == [job_summary(store.get(job.id)) for job in reversed(jobs[1:])]
    details = web.get(f"/api/jobs/{jobs[0].id}").json()
    assert details["id"] == jobs[0].id and {"metrics", "artifacts", "events", "runs", "took"} <= set(details)
    assert web.get("/api/workers").json() == []
    assert web.get("/api/jobs/ffffffff-0000").status_code == 404


def test_jobs_are_filtered_and_paginated(installation):
    settings, store = installation
    done = add_job(store, status="succeeded", queue="cpu")
    add_job(store)
    web = browser(settings)
    assert [j["id"] for j in web.get("/api/jobs", params={"state": "succeeded"}).json()] == [done.id]
    assert [j["id"] for j in web.get("/api/jobs", params={"queue": "cpu"}).json()] == [done.id]
    assert len(web.get("/api/jobs", params={"limit": 1, "page": 2}).json()) == 1
    assert web.get("/api/jobs", params={"limit": 1, "page": 3}).json() == []
    assert "older" in web.get("/", params={"limit": 1}).text


def test_a_token_is_required_on_every_request_when_set(installation):
    settings, store = installation
    web = dashboard(settings, token="s3cret")
    assert web.get("/").status_code == 401
    assert web.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = web.get("/?token=s3cret&state=queued", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/?state=queued"
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert web.get("/workers").status_code == 200  # the cookie carries it from now on


def test_without_the_token_nothing_is_read_or_changed_on_this_machine_either(installation):
    settings, store = installation
    job = add_job(store)
    web = dashboard(settings)  # no GENQ_UI_TOKEN: the home's own token is required
    for path in ("/", "/api/jobs", f"/api/jobs/{job.id}", "/submit?kind=train-vae", "/metrics", "/workers"):
        response = web.get(path)
        assert response.status_code == 401, path
        assert job.id not in response.text and "csrf_token" not in response.text, path
    assert web.post(f"/jobs/{job.id}/cancel", data={"csrf_token": "0" * 64}).status_code == 401
    assert web.post("/submit", data={"csrf_token": "0" * 64, "kind": "train-vae", "epochs": "1"}).status_code == 401
    assert [j.id for j in store.list(limit=10)] == [job.id] and store.get(job.id).status == "queued"


def test_the_homes_token_is_made_private_on_first_need_and_reused(installation):
    from genq.client.ui.security import token_file

    settings, _ = installation
    path = token_file(settings)
    assert not path.exists()
    dashboard(settings)
    token = home_token(settings)
    assert len(token) >= 32
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    dashboard(settings)
    assert home_token(settings) == token
    assert dashboard(settings).get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_genq_ui_token_wins_over_the_homes_token(installation, monkeypatch):
    from genq.client.ui.security import token_file

    settings, _ = installation
    dashboard(settings)
    from_file = home_token(settings)
    monkeypatch.setenv("GENQ_UI_TOKEN", "from-the-variable")
    web = dashboard(settings)
    assert web.get("/api/jobs", headers={"Authorization": "Bearer from-the-variable"}).status_code == 200
    assert web.get("/api/jobs", headers={"Authorization": f"Bearer {from_file}"}).status_code == 401
    assert token_file(settings).read_text().strip() == from_file


def test_the_redirect_after_the_token_stays_on_this_server(installation):
    settings, _ = installation
    web = dashboard(settings, token="s3cret")
    for asked, target in (("//evil.example/x?token=s3cret&a=b", "/evil.example/x?a=b"),
                          ("///evil.example?token=s3cret", "/evil.example"),
                          ("/%5Cevil.example?token=s3cret", "/%5Cevil.example"),
                          ("/jobs/a%20b?token=s3cret", "/jobs/a%20b")):
        web.cookies.clear()
        response = web.get(f"http://testserver{asked}", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == target, asked


def test_posts_without_the_csrf_token_are_refused(installation):
    settings, store = installation
    job = add_job(store)
    web = browser(settings)
    assert web.post(f"/jobs/{job.id}/cancel", data={}).status_code == 403
    assert web.post(f"/jobs/{job.id}/cancel", data={"csrf_token": "0" * 64}).status_code == 403
    assert web.post("/submit", data={"kind": "train-vae"}).status_code == 403
    assert store.get(job.id).status == "queued"
    token = csrf_of(web.get(f"/jobs/{job.id}").text)
    response = web.post(f"/jobs/{job.id}/cancel", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and store.get(job.id).status == "cancelled"


def test_bad_form_input_shows_the_declarations_message_next_to_its_field(installation):
    settings, store = installation
    web = browser(settings)
    token = csrf_of(web.get("/submit?kind=train-vae").text)
    response = web.post("/submit", data={"csrf_token": token, "kind": "train-vae", "epochs": "0"})
    assert response.status_code == 400
    assert re.search(r'id="error-epochs">[^<]*greater than or equal to 1', response.text)
    response = web.post("/submit", data={"csrf_token": token, "kind": "train-vae", "beta": "abc"})
    assert 'id="error-beta"' in response.text


def test_submit_again_prefills_the_form_with_the_jobs_settings(installation):
    settings, store = installation
    job = add_job(store, params={**TrainVAE(epochs=3, beta=4.0).to_json()})
    page = browser(settings).get(f"/submit?kind=train-vae&from={job.id}").text
    assert 'id="field-epochs" name="epochs" value="3"' in page and 'name="beta" value="4.0"' in page


@pytest.mark.parametrize("backend", ["folder", "s3"])
def test_artifacts_are_served_only_through_the_index(installation, tmp_path, backend, request):
    settings, store = installation
    if backend == "s3":  # moto's S3 server on 127.0.0.1: pictures and downloads stream from the bucket
        settings = dataclasses.replace(settings, artifact_root=request.getfixturevalue("s3_root"))
    job = add_job(store)
    image = png_bytes(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (8, 8)), {"parameters": "a boat"})
    add_artifact(settings, store, job.id, "image-0.png", image)
    add_artifact(settings, store, job.id, "model.bin", b"weights")
    open_artifact_store(settings.artifact_root).put(job.id, "unindexed.txt", b"secret")  # in the store, not the index
    (tmp_path / "outside.txt").write_text("secret")
    web = browser(settings)
    png = web.get(f"/jobs/{job.id}/artifacts/image-0.png")
    assert png.status_code == 200 and png.content == image and png.headers["content-type"] == "image/png"
    assert png.headers["x-content-type-options"] == "nosniff"
    download = web.get(f"/jobs/{job.id}/artifacts/model.bin")
    assert download.content == b"weights" and download.headers["content-disposition"].startswith("attachment")
    for name in ("unindexed.txt", "../outside.txt", "..%2F..%2Foutside.txt", "%2e%2e/outside.txt", "nope.png"):
        assert web.get(f"/jobs/{job.id}/artifacts/{name}").status_code == 404, name
    page = web.get(f"/jobs/{job.id}").text
    assert "a boat" in page and "7" in page  # the image's settings, and the file's size


def test_a_job_page_charts_train_and_test_of_one_measure_together_and_shows_one_point_metrics_as_numbers(installation):
    settings, store = installation
    job = add_job(store)
    with store.sessions() as session:
        session.add_all([Metric(job_id=job.id, step=step, name="train_loss_per_image", value=200.0 - step)
                         for step in range(1, 4)])
        session.add(Metric(job_id=job.id, step=3, name="test_loss_per_image", value=190.123456789))
        session.add(Metric(job_id=job.id, step=3, name="test_loss_per_batch", value=12345.6789012))
        session.commit()
    web = browser(settings)
    page = web.get(f"/jobs/{job.id}").text
    assert f'data-src="/api/jobs/{job.id}/metrics"' in page
    assert 'data-chart="loss_per_image" data-series="train_loss_per_image,test_loss_per_image"' in page
    assert 'data-chart="loss_per_batch"' not in page  # one point: a number, rounded as the CLI prints it
    assert re.search(r"<th>test_loss_per_batch</th><td>12345.7</td>", page)
    assert web.get(f"/api/jobs/{job.id}/metrics").json() == {  # the API's shape: the server answers this path first
        "test_loss_per_batch": [{"step": 3, "value": 12345.6789012}], "test_loss_per_image": [{"step": 3, "value": 190.123456789}],
        "train_loss_per_image": [{"step": s, "value": 200.0 - s} for s in (1, 2, 3)]}
    chart = web.get(f"/jobs/{job.id}/charts/train_loss_per_image.png")  # the server-drawn PNG stays for reports
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")
    assert web.get(f"/jobs/{job.id}/charts/nothing.png").status_code == 404


def test_metrics_are_prometheus_text_read_at_scrape_time(installation):
    settings, store = installation
    add_job(store, status="succeeded", started_at=_at(0), finished_at=_at(30))
    add_job(store)
    web = browser(settings)
    text = web.get("/metrics").text
    assert 'genq_jobs{kind="train-vae",state="succeeded"} 1.0' in text
    assert f'genq_queue_length{{queue="{settings.queue}"}} 1.0' in text
    assert re.search(r'genq_job_duration_seconds_sum\{kind="train-vae",state="succeeded"\} 30\.0', text)
    add_job(store)
    assert f'genq_queue_length{{queue="{settings.queue}"}} 2.0' in web.get("/metrics").text
    browser(settings)  # a second app: its own registry, no duplicate-collector error


def _at(seconds: float):
    from datetime import datetime, timedelta, timezone

    return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)


def test_a_host_other_than_this_machine_needs_the_token(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "GENQ_HOME": str(tmp_path)}
    env.pop("GENQ_UI_TOKEN", None)
    result = subprocess.run([str(Path(sys.executable).parent / "client"), "ui", "--host", "0.0.0.0", "--port", "0"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "GENQ_UI_TOKEN" in result.stderr


def test_a_group_page_shows_its_table_and_report_figures(installation):
    from genq.api import Client
    from genq.client.groups import group_summary
    from genq.core.store.models import GroupRow

    settings, store = installation
    with store.sessions() as session:
        session.add(GroupRow(id="0f0f0f0f-0000-0000-0000-000000000000", name="betas", kind="train-vae", size=2,
                          definition={"fixed": {"epochs": 1}, "swept": {"beta": [1.0, 4.0]}}))
        session.commit()
    for index, beta in enumerate((1.0, 4.0)):
        job = add_job(store, status="succeeded", group_id="0f0f0f0f-0000-0000-0000-000000000000",
                      group_point={"beta": beta}, group_index=index, result={"test_loss_per_image": 150.0 + beta},
                      params={**TrainVAE(epochs=1, beta=beta).to_json()})
        with store.sessions() as session:
            session.add_all([Metric(job_id=job.id, step=step, name="train_loss_per_image", value=190.0 - step)
                             for step in (1, 2)])
            session.commit()
    web = browser(settings)
    page = web.get("/groups/betas").text
    assert 'id="group-table"' in page and "/groups/0f0f0f0f-0000-0000-0000-000000000000/figures/loss-curves.png" in page
    for figure in ("loss-curves.png", "final-loss.png"):
        response = web.get(f"/groups/0f0f0f0f/figures/{figure}")
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG"), figure
    assert web.get("/groups/0f0f0f0f/figures/grid.png").status_code == 404
    assert web.get("/api/groups/betas").json() == group_summary(Client(settings).group("betas"))


def test_bound_to_this_machine_it_answers_only_to_its_own_host_names(installation):
    from genq.client.ui.app import make_app
    from genq.client.ui.security import LOCAL_NAMES

    settings, _ = installation
    web = TestClient(make_app(settings, allowed_hosts=list(LOCAL_NAMES)), base_url="http://127.0.0.1:8265")
    owner = {"Authorization": f"Bearer {home_token(settings)}"}
    assert web.get("/", headers=owner).status_code == 200
    assert web.get("/", headers={**owner, "Host": "evil.example:8265"}).status_code == 400


def test_the_log_api_gives_the_lines_after_the_last_one_seen(installation):
    settings, store = installation
    job = add_job(store)
    for n in range(3):
        store.append_log(job.id, "info", f"line {n} <b>")
    web = browser(settings)
    lines = web.get(f"/api/jobs/{job.id}/log").json()
    assert [line["message"] for line in lines] == ["line 0 <b>", "line 1 <b>", "line 2 <b>"]
    assert [line["message"] for line in web.get(f"/api/jobs/{job.id}/log", params={"after": lines[1]["id"]}).json()] == ["line 2 <b>"]
    page = web.get(f"/jobs/{job.id}").text
    assert "line 2 &lt;b&gt;" in page and f'data-after="{lines[-1]["id"]}"' in page


OWNER_TOKEN = "owner-token"


@pytest.fixture
def on_both_stores(database_url, tmp_path):
    """The dashboard over SQLite and PostgreSQL (which keeps no NUL and compares only BIGINTs), signed in."""
    from genq.client.ui.app import make_app

    settings = load_settings({"GENQ_HOME": str(tmp_path), "GENQ_DATABASE_URL": database_url,
                              "GENQ_BROKER_URL": "redis://127.0.0.1:6379/0"})
    store = JobStore(session_factory(make_engine(database_url)), settings.queue_for)
    web = TestClient(make_app(settings, token=OWNER_TOKEN), headers={"Authorization": f"Bearer {OWNER_TOKEN}"})
    return web, store


def test_text_the_store_cannot_keep_is_a_400_on_the_form_and_never_a_500(on_both_stores):
    web, store = on_both_stores
    job = add_job(store)
    token = csrf_of(web.get("/submit?kind=sd").text)
    for field, text, says in (("prompt", "a \x00 cat", "must not contain the NUL character (U+0000)"),
                              ("negative", "\x00", "must not contain the NUL character (U+0000)"),
                              ("queue", "gpu\x00", "must be 1-64 letters")):
        form = {"csrf_token": token, "kind": "sd", "prompt": "a cat", field: text}
        response = web.post("/submit", data=form, follow_redirects=False)
        assert response.status_code == 400, field
        assert re.search(fr'id="error-{field}">[^<]*{re.escape(says)}', response.text), field
    assert [j.id for j in store.list(limit=10)] == [job.id]
    for path, name in (("/?prompt=a%00b", "prompt"), ("/api/jobs?prompt=%00", "prompt"), ("/api/jobs?kind=x%00", "kind"),
                       ("/api/jobs?group=%00", "group")):
        response = web.get(path)
        assert (response.status_code, response.text) == (400, f"{name}: must not contain the NUL character (U+0000)"), path
    for path in ("/jobs/%00", "/api/jobs/%00", f"/api/jobs/{job.id[:4]}%00/log", "/groups/%00",
                 f"/jobs/{job.id}/charts/%00.png"):
        assert web.get(path).status_code == 404, path
    assert web.get("/submit?kind=train-vae&from=%00").status_code == 200


@pytest.mark.parametrize("query", ["page=99999999999999999999", "page=1000001", "page=0", "page=-1", "page=two",
                                   "page=1.5", "limit=99999999999999999999", "limit=0", "limit=201", "limit=%00"])
def test_a_page_out_of_range_is_a_400(on_both_stores, query):
    web, _ = on_both_stores
    for path in ("/", "/api/jobs"):
        response = web.get(f"{path}?{query}")
        assert response.status_code == 400 and query.split("=")[0] in response.text, (path, response.text)


def test_a_log_position_out_of_range_is_a_400(on_both_stores):
    web, store = on_both_stores
    job = add_job(store)
    store.append_log(job.id, "info", "line 0")
    for after in ("99999999999999999999", str(2**31), "-1", "x", "1e3"):
        response = web.get(f"/api/jobs/{job.id}/log", params={"after": after})
        assert response.status_code == 400 and "after must be an integer from 0 to" in response.text, after
    assert web.get(f"/api/jobs/{job.id}/log", params={"after": str(2**31 - 1)}).json() == []
    assert [line["message"] for line in web.get(f"/api/jobs/{job.id}/log", params={"after": "0"}).json()] == ["line 0"]
