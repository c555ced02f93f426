"""`client up` starts the dashboard as a recorded process beside the worker; `client down` stops it."""
from __future__ import annotations

import urllib.request

import pytest

from genq.client import local
from genq.core.config import load_settings
from genq.core.store.db import upgrade

pytestmark = pytest.mark.integration


def test_the_recorded_dashboard_starts_once_prints_its_url_and_stops(tmp_path):
    home = tmp_path / "home"
    settings = load_settings({"GENQ_HOME": str(home), "GENQ_BROKER_URL": "redis://127.0.0.1:6379/0"})
    local.ensure_home(settings)
    upgrade(settings.database_url)
    started = local.start_ui(settings)
    try:
        assert started.startswith("ui: http://127.0.0.1:"), started
        url = started.split()[1]
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"<h1>Jobs</h1>" in page.read()
        assert local.start_ui(settings).startswith("ui: already running")
    finally:
        stopped = local.stop(settings, "ui")
    assert stopped.startswith("ui: stopped"), stopped
    assert not (home / "run" / "ui.pid").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
