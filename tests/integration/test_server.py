"""`client server`: a real server process started by the real CLI on a free port, over a real store
(both backends), Redis and, where jobs must run, a real worker. Users see and change only their own
jobs through every endpoint; limits hold over HTTP; the events stream follows a job to its end;
schemathesis fuzzes the live OpenAPI schema."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, text

from bench.remote import stop_server as stop
from tests.conftest import BIN

pytestmark = pytest.mark.integration

SERVER_START_TIMEOUT_S = 60
FAST_SD = {"width": 64, "height": 64, "steps": 2}


@dataclass
class Server:
    url: str
    operator_token: str
    process: subprocess.Popen

    def call(self, method: str, path: str, token: str | None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


def start_server(genq, *args: str, env: dict[str, str] | None = None) -> Server:
    log_path = genq.home / "server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen([str(BIN / "client"), "server", "--port", "0", *args], env={**genq.env, **(env or {})},
                               cwd=genq.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not (lines := [line for line in log_path.read_text().splitlines() if line.startswith("genq server: ")]):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the server did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    address = lines[0].split()[2]
    url, _, query = address.partition("/?token=")
    return Server(url, query, process)


@pytest.fixture
def server(genq):
    started = start_server(genq)
    yield started
    stop(started.process)


def add_user(genq, name: str, *flags: str) -> str:
    return genq.client_json("users", "add", name, *flags)["token"]


def job_count(genq) -> int:
    engine = create_engine(genq.env["GENQ_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    finally:
        engine.dispose()


def sse_events(lines):
    """(event, data) of each server-sent event, the event's id in data["event_id"] when it has one."""
    fields: dict[str, str] = {}
    for line in [*lines, ""]:
        if line == "":
            if "data" in fields:
                data = json.loads(fields["data"])
                yield fields.get("event"), {**data, **({"event_id": int(fields["id"])} if "id" in fields else {})}
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def stream_for(server: Server, token: str, seconds: float) -> list:
    """What the unfiltered events stream replays from the first transition on, read for `seconds`."""
    lines, deadline = [], time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": "0"}
    try:
        with httpx.stream("GET", f"{server.url}/api/events", headers=headers, timeout=httpx.Timeout(10, read=1)) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                lines.append(line)
                if time.monotonic() > deadline:
                    break
    except httpx.ReadTimeout:
        pass
    return list(sse_events(lines))


def sd_body(model, prompt: str, params: dict | None = None, **more) -> dict:
    return {"kind": "sd", "params": {"model": str(model), "prompt": prompt, **FAST_SD, **(params or {})}, **more}


def test_users_see_and_cancel_only_their_own_jobs_through_every_endpoint(genq, server, tiny_model):
    # Given alice and bob, each with a job and a group, and an admin
    alice, bob, root = add_user(genq, "alice"), add_user(genq, "bob"), add_user(genq, "root", "--admin")
    mine = server.call("POST", "/api/jobs", alice, json=sd_body(tiny_model, "alice's")).json()
    theirs = server.call("POST", "/api/jobs", bob, json=sd_body(tiny_model, "bob's secret")).json()
    their_group = server.call("POST", "/api/jobs", bob, json=sd_body(tiny_model, "b", sweep={"seed": [1, 2]},
                                                                    group_name="bobs")).json()
    assert theirs["status"] == "queued" and len(their_group["jobs"]) == 2
    other = theirs["id"]

    # Then every way alice could reach bob's job or group answers 404, as for one that does not exist
    for method, path in [("GET", f"/api/jobs/{other}"), ("GET", f"/api/jobs/{other[:8]}"),
                         ("GET", f"/api/jobs/{other}/metrics"), ("GET", f"/api/jobs/{other}/logs"),
                         ("GET", f"/api/jobs/{other}/artifacts"), ("GET", f"/api/jobs/{other}/artifacts/grid.png"),
                         ("POST", f"/api/jobs/{other}/cancel"), ("GET", f"/api/events?job={other}"),
                         ("GET", f"/api/groups/{their_group['id']}"), ("GET", "/api/groups/bobs"),
                         ("POST", f"/api/groups/{their_group['id']}/cancel"), ("GET", "/api/jobs?group=bobs"),
                         ("GET", "/api/jobs/ffffffff-0000-0000-0000-000000000000")]:
        answer = server.call(method, path, alice)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "secret" not in answer.text and other not in answer.text
    # And naming bob's job as a dependency is refused as an unknown job
    refused = server.call("POST", "/api/jobs", alice, json=sd_body(tiny_model, "x", after=other))
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "after"]
    # And the lists show alice only her own; the shared queue shows bob's jobs only as counts
    assert [job["id"] for job in server.call("GET", "/api/jobs", alice).json()] == [mine["id"]]
    assert server.call("GET", "/api/groups", alice).json() == []
    queue = server.call("GET", "/api/queue", alice).json()
    assert [job["id"] for job in queue["jobs"]] == [mine["id"]] and queue["jobs"][0]["position"] == 1  # submitted first
    assert sum(each["queued"] for each in queue["queues"]) == 4 and other not in json.dumps(queue)
    # And bob's jobs are as they were
    assert server.call("GET", f"/api/jobs/{other}", bob).json()["status"] == "queued"

    # And an admin, or the home's own token, sees both users' jobs
    everyone = {mine["id"], other, *(job["id"] for job in their_group["jobs"])}
    for token in (root, server.operator_token):
        assert {job["id"] for job in server.call("GET", "/api/jobs", token).json()} == everyone
    assert server.call("GET", f"/api/groups/{their_group['id']}", root).json()["name"] == "bobs"
    # And alice cancels her own job
    assert server.call("POST", f"/api/jobs/{mine['id']}/cancel", alice).json()["status"] == "cancelled"

    # When bob's token is revoked, it is refused; so are an unknown token and none
    genq.client("users", "revoke", "bob")
    for token in (bob, "not-a-token", None):
        answer = server.call("GET", "/api/jobs", token)
        assert answer.status_code == 401, token
        assert answer.headers["www-authenticate"] == "Bearer"
    assert server.call("GET", "/healthz", None).json()["status"] == "ok"


def test_a_submit_past_max_queued_is_refused_over_http_and_stores_nothing(genq, server, tiny_model):
    alice = add_user(genq, "alice")
    genq.client("users", "set", "alice", "--max-queued", "1")
    assert server.call("POST", "/api/jobs", alice, json=sd_body(tiny_model, "one")).status_code == 201
    for body in (sd_body(tiny_model, "two"), sd_body(tiny_model, "s", sweep={"seed": [1, 2]})):
        answer = server.call("POST", "/api/jobs", alice, json=body)
        assert answer.status_code == 429 and "at most 1 jobs waiting or queued" in answer.json()["detail"]
    assert job_count(genq) == 1


def test_bad_input_is_a_422_with_the_clis_message(genq, server, tiny_model):
    alice = add_user(genq, "alice")
    answer = server.call("POST", "/api/jobs", alice, json={"kind": "sd", "params": {
        "model": str(tiny_model), "prompt": "x", "width": 100}})
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "params", "width"] and "multiple of 8" in error["msg"]
    unknown = server.call("POST", "/api/jobs", alice, json={"kind": "nope", "params": {}})
    assert unknown.status_code == 422 and "unknown job kind 'nope'" in unknown.json()["detail"][0]["msg"]
    point = server.call("POST", "/api/jobs", alice, json=sd_body(tiny_model, "x", sweep={"num_images": [1, 0]}))
    assert point.status_code == 422 and point.json()["detail"][0]["msg"].startswith("sweep point num_images=0: ")
    assert job_count(genq) == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_events_stream_follows_a_job_to_its_end_and_its_files_download_with_their_sha256(genq, server, tiny_model):
    # Given a worker and alice's job
    alice, bob = add_user(genq, "alice"), add_user(genq, "bob")
    genq.start_worker()
    job = server.call("POST", "/api/jobs", alice, json=sd_body(tiny_model, "a lighthouse", {"num_images": 2, "steps": 150, "width": 128, "height": 128})).json()
    # When alice follows its events (and, while it runs, both users look at the workers)
    seen, fleet = [], {}
    with httpx.stream("GET", f"{server.url}/api/events", params={"job": job["id"]},
                      headers={"Authorization": f"Bearer {alice}"}, timeout=120) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        for event, data in sse_events(stream.iter_lines()):
            seen.append((event, data))
            if event == "progress" and not fleet:
                fleet = {who: server.call("GET", "/api/workers", token).json() for who, token in (("alice", alice),
                                                                                                 ("bob", bob))}
    # Then bob's view of the fleet never names alice's job; alice's does while it runs
    assert job["id"] not in json.dumps(fleet["bob"])
    assert all(worker["current_job"] in (None, job["id"]) for worker in fleet["alice"])
    # Then it tells each state change to the end, with progress while it runs, and then closes
    states = [data["to"] for event, data in seen if event == "state"]
    assert states[-2:] == ["running", "succeeded"] and states[0] in ("queued", "running")
    assert any(event == "progress" for event, _ in seen), seen  # while it ran (how far depends on the poll's timing)
    assert seen[-1] == ("end", {"job": job["id"], "status": "succeeded"})
    assert all(data["job"] == job["id"] for _, data in seen)
    # And a stream resumed after its first transition (Last-Event-ID) gives the ones after it, then the end
    first_id = next(data for event, data in seen if event == "state" and data["from"] is not None)
    resumed = httpx.get(f"{server.url}/api/events", params={"job": job["id"]}, timeout=60,
                        headers={"Authorization": f"Bearer {alice}", "Last-Event-ID": str(first_id["event_id"])})
    replayed = [data for _, data in sse_events(resumed.text.splitlines())]
    later = [data for event, data in seen if event == "state" and data.get("event_id", 0) > first_id["event_id"]]
    assert replayed[:-1] == later
    assert replayed[-1] == {"job": job["id"], "status": "succeeded"}
    # And the unfiltered stream, replayed from the start, shows alice her job's changes and bob nothing of them
    assert job["id"] in json.dumps(stream_for(server, alice, seconds=2))
    assert job["id"] not in json.dumps(stream_for(server, bob, seconds=2))
    # And each artifact downloads with the sha256 the store recorded, which its bytes match
    listed = server.call("GET", f"/api/jobs/{job['id']}/artifacts", alice).json()
    assert {item["name"] for item in listed} >= {"grid.png"}
    for item in listed:
        answer = server.call("GET", f"/api/jobs/{job['id']}/artifacts/{item['name']}", alice)
        assert answer.status_code == 200
        assert answer.headers["x-genq-sha256"] == item["sha256"] == hashlib.sha256(answer.content).hexdigest()
        assert answer.headers["digest"].startswith("sha-256=")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serving_beyond_this_machine_needs_users_or_a_chosen_token(genq):
    # Given no users and no GENQ_UI_TOKEN: the home's own token is never offered beyond this machine
    env = {key: value for key, value in genq.env.items() if key != "GENQ_UI_TOKEN"}
    result = subprocess.run([str(BIN / "client"), "server", "--host", "0.0.0.0", "--port", "0"], env=env,
                            cwd=genq.home, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: serving on 0.0.0.0 (not this machine only) needs users (`client users add NAME`), or GENQ_UI_TOKEN "
        "set for its one user: this home's own token is for this machine only"]
    # When a user exists, it serves there, to that user's token
    alice = add_user(genq, "alice")
    genq.env.pop("GENQ_UI_TOKEN", None)
    started = start_server(genq, "--host", "0.0.0.0")
    try:
        local = Server(started.url.replace("0.0.0.0", "127.0.0.1"), started.operator_token, started.process)
        assert local.call("GET", "/api/jobs", alice).json() == []
    finally:
        stop(started.process)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_openapi_schema_holds_under_schemathesis(genq, server, tmp_path):
    """Short form: a bounded number of examples per operation; no 500s, every answer as documented."""
    schema = server.call("GET", "/openapi.json", None).json()
    bodies = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert len(bodies) == 4  # one per kind, from its declaration
    # The interactive docs work offline: Swagger UI's files come from the server, not a CDN
    page = server.call("GET", "/docs", None)
    assert page.status_code == 200 and "/openapi.json" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(asset.startswith("/docs-assets/") for asset in assets), assets
    for asset in assets:
        assert server.call("GET", asset, None).status_code == 200, asset
    root = add_user(genq, "root", "--admin")
    run = subprocess.run([str(BIN / "st"), "run", f"{server.url}/openapi.json", "-H", f"Authorization: Bearer {root}",
                          "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                                      "response_schema_conformance,response_headers_conformance",
                          "--phases", "coverage,fuzzing", "--max-examples", "10", "--max-time", "60",
                          "--seed", "19", "--no-shrink", "--exclude-path", "/api/events", "--request-timeout", "20"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:]
