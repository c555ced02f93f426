"""`client list` is a table like `client workers`: a header, then ID, KIND, STATUS, GROUP, SUBMITTED and
DURATION in aligned columns. Its --json is unchanged. Store-independent: SQLite only."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from genq.core.store.models import JobRow
from genq.core.store.states import JobStatus

pytestmark = pytest.mark.integration

COLUMNS = ["ID", "KIND", "STATUS", "GROUP", "SUBMITTED", "DURATION"]
FAST = ["--epochs", "1", "--train-limit", "64", "--capacity", "8"]


def set_times(store, job_id: str, **times: datetime) -> None:
    with store.sessions() as session:
        row = session.get(JobRow, job_id)
        for name, value in times.items():
            setattr(row, name, value)
        session.commit()


def columns(output: str) -> tuple[str, dict[str, dict[str, str]]]:
    """The header line, and each job's cells cut at the header's column starts (DURATION ends where its
    header ends: right-aligned)."""
    header, *lines = output.splitlines()
    starts = [header.index(name) for name in COLUMNS]
    assert starts == sorted(starts) and header.startswith("ID")
    cells = {}
    for line in lines:
        assert len(line) == len(header), (line, header)  # every line as wide as the header: aligned
        values = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None])]
        assert line[starts[-1] - 2:starts[-1]] == "  " and line[starts[1] - 2:starts[1]] == "  "
        cells[values[0]] = dict(zip(COLUMNS, values))
    return header, cells


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_list_has_a_header_and_group_and_duration_columns(genq):
    # Given jobs in a named sweep, an unnamed sweep, and alone; queued, waiting, running and finished
    named = genq.client_json("submit", "train-vae", *FAST, "--sweep", "beta=1,2", "--group-name", "betas")
    unnamed = genq.client_json("submit", "train-vae", *FAST, "--sweep", "seed=1,2")
    alone = genq.client("submit", "train-vae", *FAST).stdout.strip()
    waiting = genq.client("submit", "train-vae", *FAST, "--after", alone).stdout.strip()
    running, succeeded = (job["id"] for job in named["jobs"])
    store = genq.store()
    now = datetime.now(timezone.utc)
    for job_id in (running, succeeded, alone):
        store.claim(job_id, "node:cpu0", lease_s=600)
    store.transition(succeeded, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    store.transition(alone, JobStatus.RUNNING, JobStatus.FAILED, values={"error": "it broke"})
    set_times(store, running, started_at=now - timedelta(seconds=95))
    set_times(store, succeeded, started_at=now - timedelta(hours=3),
              finished_at=now - timedelta(hours=3) + timedelta(seconds=12.5))
    set_times(store, alone, started_at=now - timedelta(hours=5), finished_at=now - timedelta(hours=2, minutes=57))

    # When they are listed
    output = genq.client("list").stdout
    header, cells = columns(output)

    # Then a header names the columns, and each job has its kind, status, group and duration
    assert header.split() == COLUMNS
    first_unnamed, second_unnamed = (job["id"] for job in unnamed["jobs"])
    assert set(cells) == {running, succeeded, first_unnamed, second_unnamed, alone, waiting}
    expected = {
        running: ("running", "betas"), succeeded: ("succeeded", "betas"),
        first_unnamed: ("queued", unnamed["id"][:8]), second_unnamed: ("queued", unnamed["id"][:8]),
        alone: ("failed", "-"), waiting: ("waiting", "-"),
    }
    for job_id, (status, group) in expected.items():
        assert (cells[job_id]["KIND"], cells[job_id]["STATUS"], cells[job_id]["GROUP"]) == ("train-vae", status, group)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells[job_id]["SUBMITTED"])
    assert re.fullmatch(r"1m3\ds", cells[running]["DURATION"])  # so far (95 s when it was set)
    assert cells[succeeded]["DURATION"] == "12.5s"  # its run
    assert cells[alone]["DURATION"] == "2h03m"
    for queued in (first_unnamed, second_unnamed, waiting):
        assert cells[queued]["DURATION"] == "-"
    # Newest first, as before
    assert list(cells)[:2] == [waiting, alone]

    # And a group's listing has the same table; --json is the same list of job objects as before
    _, of_group = columns(genq.client("list", "--group", "betas").stdout)
    assert list(of_group) == [running, succeeded]
    listed = genq.client_json("list")
    assert [job["id"] for job in listed] == list(cells)
    assert set(listed[0]) == {"id", "kind", "status", "params", "result", "error", "attempts", "worker", "depends_on",
                              "submitted_at", "started_at", "finished_at", "heartbeat_at", "lease_until", "queue",
                              "priority", "group", "group_point", "progress"}
