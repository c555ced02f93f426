"""The dashboard's readable values, groups list and group filter, compare page, previews and fleet history,
in process (Starlette's TestClient) over a real SQLite store."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from genq.core.images import png_bytes
from genq.core.kinds.train_vae import TrainVAE
from genq.core.store.models import GroupRow, JobEvent, JobRow, Metric
from tests.unit.test_ui import add_job, browser, installation  # noqa: F401  (the fixture)

GROUP_ID = "0f0f0f0f-0000-0000-0000-000000000000"


def ago(seconds: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def a_sweep(store) -> list[JobRow]:
    with store.sessions() as session:
        session.add(GroupRow(id=GROUP_ID, name="betas", kind="train-vae", size=2, created_at=ago(120),
                             definition={"fixed": {"epochs": 2}, "swept": {"beta": [1.0, 4.0]}}))
        session.commit()
    jobs = []
    for index, beta in enumerate((1.0, 4.0)):
        jobs.append(add_job(store, status="succeeded", group_id=GROUP_ID, group_point={"beta": beta}, group_index=index,
                            params={**TrainVAE(epochs=2, beta=beta).to_json()}, started_at=ago(100), finished_at=ago(27),
                            result={"test_loss_per_image": 150.123456789 + beta}))
        with store.sessions() as session:
            session.add_all([Metric(job_id=jobs[-1].id, step=step, name="train_loss_per_image", value=190.0 - step - beta)
                             for step in (1, 2)])
            session.commit()
    return jobs


def test_a_job_page_shows_relative_times_with_the_exact_one_on_hover_durations_in_words_and_says_its_log_is_empty(installation):
    settings, store = installation
    job = add_job(store, status="succeeded", started_at=ago(100), finished_at=ago(27),
                  result={"test_loss_per_image": 150.123456789})
    page = browser(settings).get(f"/jobs/{job.id}").text
    assert "took 1 min 13 s" in page
    submitted = store.get(job.id).submitted_at
    assert re.search(rf'<time datetime="[^"]+" title="{submitted:%Y-%m-%d %H:%M:%S} UTC">(just now|\d+ s ago)</time>', page)
    assert "+00:00</td>" not in page and "150.123456789" not in page and "<td>150.123</td>" in page
    assert "this job wrote no log lines" in page


def test_a_running_job_says_how_long_it_has_been_running(installation):
    settings, store = installation
    job = add_job(store, status="running", started_at=ago(75), progress_done=3, progress_total=10)
    page = browser(settings).get(f"/jobs/{job.id}").text
    assert re.search(r"running for 1 min 1[5-9] s", page) and "took" not in page and "no log lines yet" in page


def test_the_groups_list_counts_each_groups_jobs_by_state_and_the_jobs_filter_takes_a_name_or_a_prefix(installation):
    settings, store = installation
    jobs = a_sweep(store)
    add_job(store)  # a job of no group
    web = browser(settings)
    groups = web.get("/groups").text
    assert re.search(rf'<tr data-id="{GROUP_ID}">\s*<td><a href="/groups/{GROUP_ID}">betas</a></td><td>train-vae</td><td>2</td>', groups)
    assert "2 succeeded" in groups and "2 min ago" in groups
    for ref in ("betas", GROUP_ID, GROUP_ID[:6]):
        page = web.get("/", params={"group": ref}).text
        assert re.findall(r'<tr data-id="([^"]+)"', page) == [job.id for job in jobs], ref
        assert [job["id"] for job in web.get("/api/live/jobs", params={"group": ref}).json()] == [job.id for job in jobs]
    missing = web.get("/", params={"group": "nope"}).text
    assert 'id="missing-group">no group &#39;nope&#39;' in missing and "<tr data-id=" not in missing
    group_page = web.get(f"/groups/{GROUP_ID}").text
    assert "None" not in group_page and "1 min 13 s" in group_page and "151.123" in group_page


def test_comparing_jobs_puts_their_parameters_side_by_side_and_serves_their_series(installation):
    settings, store = installation
    first, second = a_sweep(store)
    web = browser(settings)
    page = web.get("/compare", params=[("job", first.id), ("job", second.id[:8])]).text
    assert re.search(r'<tr class="differs"><th>beta</th><td>1(\.0)?</td><td>4(\.0)?</td></tr>', page)
    assert '<tr><th>epochs</th><td>2</td><td>2</td></tr>' in page
    assert 'data-metric="train_loss_per_image"' in page
    series = web.get("/api/compare", params=[("job", first.id), ("job", second.id)]).json()["jobs"]
    assert [(job["id"], job["label"]) for job in series] == [(first.id, f"{first.id[:8]} (beta=1.0)"),
                                                             (second.id, f"{second.id[:8]} (beta=4.0)")]
    assert series[1]["metrics"]["train_loss_per_image"] == [{"step": 1, "value": 185.0}, {"step": 2, "value": 184.0}]
    assert web.get("/compare", params={"group": "betas"}).text.count('<th><a href="/jobs/') == 2
    assert web.get("/compare", params={"job": "nope"}).status_code == 404


def test_submit_again_with_a_seed_prefills_the_form_with_that_seed(installation):
    settings, store = installation
    job = add_job(store, params={**TrainVAE(epochs=3, seed=1).to_json()})
    page = browser(settings).get("/submit", params={"kind": "train-vae", "from": job.id, "seed": "42"}).text
    assert 'name="seed" value="42"' in page and 'name="epochs" value="3"' in page


def test_a_running_jobs_preview_is_served_from_its_row_and_listed_with_its_time(installation):
    from genq.core.store.jobs import RunWrites
    from genq.core.store.states import JobStatus

    settings, store = installation
    job = add_job(store, status="running", attempts=1)
    web = browser(settings)
    assert web.get(f"/jobs/{job.id}/preview.png").status_code == 404
    assert 'id="preview" class="preview" hidden' in web.get(f"/jobs/{job.id}").text
    picture = png_bytes(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (8, 8)))
    store.record(job.id, 1, RunWrites(progress=(1, 10, "step 1"), preview=picture))  # as a run's throttled write does
    response = web.get(f"/jobs/{job.id}/preview.png")
    assert response.status_code == 200 and response.content == picture
    listed = web.get("/api/live/jobs").json()[0]
    assert listed["preview_at"] and listed["progress"]["done"] == 1
    assert "preview_at" not in web.get("/api/jobs").json()[0]  # the CLI's shape is unchanged
    assert f'src="/jobs/{job.id}/preview.png?at=' in web.get("/").text
    store.finish(job.id, 1, JobStatus.SUCCEEDED, "worker-a", None, {"finished_at": datetime.now(timezone.utc)})
    assert web.get(f"/jobs/{job.id}/preview.png").status_code == 404  # a finished job's pictures are its artifacts


def test_the_fleet_history_counts_the_queue_and_the_jobs_finished_per_minute(installation):
    settings, store = installation
    from genq.core.reads import Reads

    queued, done = add_job(store), add_job(store, status="succeeded")
    with store.sessions() as session:  # one job left the queue 10 minutes ago and finished 5 minutes ago
        session.execute(update(JobEvent).where(JobEvent.job_id.in_([queued.id, done.id])).values(at=ago(30 * 60)))
        session.add_all([JobEvent(job_id=done.id, at=ago(10 * 60), from_status="queued", to_status="running"),
                         JobEvent(job_id=done.id, at=ago(5 * 60), from_status="running", to_status="succeeded")])
        session.commit()
    history = Reads(store.sessions).fleet_history(hours=1)
    assert len(history.times) == 60 and sum(history.finished) == 1
    assert history.finished[-6] == 1 or history.finished[-5] == 1
    assert history.queued[-1] == 1 and history.queued[-25] == 2  # both were queued 25 minutes ago
    assert browser(settings).get("/api/fleet/history", params={"hours": 1}).json()["finished"] == history.finished
