"""`client up` starts the dashboard as a recorded process beside the worker; `client down` stops it.
Even on 127.0.0.1 every request needs the home's token (GENQ_HOME/ui/token), which the printed URL
carries once: another user of the machine gets nothing."""
from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest

from genq.client import local
from genq.client.ui.security import TOKEN_COOKIE, token_file
from genq.core.config import load_settings
from genq.core.kinds.train_vae import TrainVAE
from genq.core.store.db import make_engine, session_factory, upgrade
from genq.core.store.jobs import JobStore

pytestmark = pytest.mark.integration

# Run by the `nobody` user: the requests another user of the machine could make, and the files it tries to read.
STRANGER = r"""
import http.client, json, sys

port, job_id, files = json.loads(sys.argv[1])


def ask(method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return [response.status, response.read().decode(errors="replace")]


answers = {
    "GET /": ask("GET", "/"),
    "GET /api/jobs": ask("GET", "/api/jobs"),
    "GET /api/jobs/<id>": ask("GET", f"/api/jobs/{job_id}"),
    "GET /submit": ask("GET", "/submit?kind=train-vae"),
    "POST /jobs/<id>/cancel": ask("POST", f"/jobs/{job_id}/cancel", "csrf_token=" + "0" * 64),
    "POST /submit": ask("POST", "/submit", "kind=train-vae&epochs=1&csrf_token=" + "0" * 64),
}
reads = {}
for path in files:
    try:
        with open(path, "rb") as file:
            file.read()
        reads[path] = "read"
    except OSError as exc:
        reads[path] = type(exc).__name__
print(json.dumps({"answers": answers, "reads": reads}))
"""


def install(home: Path) -> tuple:
    settings = load_settings({"GENQ_HOME": str(home), "GENQ_BROKER_URL": "redis://127.0.0.1:6379/0"})
    local.ensure_home(settings)
    upgrade(settings.database_url)
    return settings, JobStore(session_factory(make_engine(settings.database_url)), settings.queue_for)


def started_url(started: str) -> str:
    assert started.startswith("ui: http://127.0.0.1:"), started
    return started.split()[1]


def get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """One request as sent, no redirect followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()
    return response


def as_nobody(*arguments: str) -> str:
    """Run a system Python as the `nobody` user, with none of this process's groups or files."""
    nobody = pwd.getpwnam("nobody")
    python = next((path for path in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(path, os.X_OK)), None)
    if python is None:
        pytest.skip("no system python3 for the nobody user to run")

    def become_nobody() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    try:
        result = subprocess.run([python, "-I", *arguments], preexec_fn=become_nobody, cwd="/", env={"PATH": "/usr/bin:/bin"},
                                capture_output=True, text=True, timeout=60)
    except subprocess.SubprocessError as exc:
        if "preexec_fn" in str(exc):
            pytest.skip(f"this process may not become the nobody user (setuid refused): {exc}")
        raise
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def open_home():
    """A GENQ_HOME the user made open to everyone (0755, in a folder anyone may pass through): only the
    modes genq gives its own folders and files keep the token from other users."""
    parent = Path(tempfile.mkdtemp(prefix="genq-open-home-"))
    parent.chmod(0o755)
    home = parent / "home"
    home.mkdir()
    home.chmod(0o755)
    yield home
    shutil.rmtree(parent)


def test_the_recorded_dashboard_starts_once_prints_its_url_and_stops(tmp_path):
    home = tmp_path / "home"
    settings, _ = install(home)
    started = local.start_ui(settings)
    try:
        url = started_url(started)
        record = json.loads((home / "run" / "ui.pid").read_text())
        assert record["cmdline"] == psutil.Process(record["pid"]).cmdline()  # what `client down` checks
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(url, timeout=10) as page:  # the token once, then the cookie
            assert page.status == 200 and b"<h1>Jobs</h1>" in page.read()
        again = local.start_ui(settings)
        assert again.startswith("ui: already running") and again.endswith(f" at {url}"), again
    finally:
        stopped = local.stop(settings, "ui")
    assert stopped.startswith("ui: stopped"), stopped
    assert not (home / "run" / "ui.pid").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


def test_another_user_of_the_machine_can_neither_read_nor_change_jobs(open_home):
    # Given `client up`'s dashboard over a store with one queued job, in a home any user may look into
    settings, store = install(open_home)
    job = store.create(TrainVAE(epochs=1).with_seed())
    started = local.start_ui(settings)
    try:
        url = started_url(started)
        port = urlsplit(url).port
        # When the nobody user asks for the jobs, the submit form, a cancel and a submit, and opens the token's files
        secret_files = [str(token_file(settings)), str(settings.home / "run" / "ui.log")]
        seen = json.loads(as_nobody("-c", STRANGER, json.dumps([port, job.id, secret_files])))
        ui_pid = int(started.split("pid ")[1].split(",")[0])
        command_line = " ".join(psutil.Process(ui_pid).cmdline())
    finally:
        stopped = local.stop(settings, "ui")
    assert stopped.startswith("ui: stopped"), stopped
    # Then every request is refused, with nothing of the jobs and no CSRF token in the answer
    for request, (status, body) in seen["answers"].items():
        assert status == 401, (request, status, body[:200])
        assert job.id not in body and "csrf_token" not in body, request
    # And the store is as it was
    assert [each.id for each in store.list(limit=10)] == [job.id]
    assert store.get(job.id).status == "queued"
    # And neither the token file nor the log with the printed URL can be read; the token is on no command line
    assert seen["reads"] == {path: "PermissionError" for path in secret_files}
    token = token_file(settings).read_text().strip()
    assert token not in command_line
    assert token_file(settings).stat().st_mode & 0o777 == 0o600
    assert token_file(settings).parent.stat().st_mode & 0o777 == 0o700


def test_the_owner_gets_in_with_the_printed_url_or_the_token_file(tmp_path):
    # Given `client up`'s dashboard
    settings, store = install(tmp_path / "home")
    job = store.create(TrainVAE(epochs=1).with_seed())
    started = local.start_ui(settings)
    try:
        url = urlsplit(started_url(started))
        token = token_file(settings).read_text().strip()
        # Then the printed URL carries the home's token once
        assert url.path == "/" and parse_qs(url.query) == {"token": [token]}
        # And opening it sets the cookie and goes to the same page without the token
        opened = get(url.port, f"/?{url.query}")
        assert opened.status == 303 and opened.getheader("location") == "/"
        cookie = opened.getheader("set-cookie")
        assert cookie.startswith(f"{TOKEN_COOKIE}={token};") and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        page = get(url.port, "/", {"Cookie": f"{TOKEN_COOKIE}={token}"})
        assert page.status == 200 and job.id in page.body.decode()
        assert get(url.port, f"/api/jobs?state=queued&token={token}").getheader("location") == "/api/jobs?state=queued"
        # And a script reading the token file gets in with it as a bearer token
        listed = get(url.port, "/api/jobs", {"Authorization": f"Bearer {token}"})
        assert listed.status == 200 and [each["id"] for each in json.loads(listed.body)] == [job.id]
        # And the redirect never leaves this server, whatever the path looks like
        assert get(url.port, f"//evil.example/x?token={token}").getheader("location") == "/evil.example/x"
    finally:
        stopped = local.stop(settings, "ui")
    assert stopped.startswith("ui: stopped"), stopped
    # And the next start reuses the same token
    again = local.start_ui(settings)
    try:
        assert parse_qs(urlsplit(started_url(again)).query) == {"token": [token]}
    finally:
        stopped = local.stop(settings, "ui")
    assert stopped.startswith("ui: stopped"), stopped
