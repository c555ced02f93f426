"""The chaos soak's counting rules (bench.soak_audit) on hand-made audit rows."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from bench.soak_audit import Fault, Snapshot, Submission, audit, duplicate_reasons, recovery_s

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(seconds, frm, to, worker=None, reason=""):
    return {"at": at(seconds), "from_status": frm, "to_status": to, "worker": worker, "reason": reason}


def worker(pid, frozen=(), exited=None):
    def frozen_at(moment):
        return next(([stop, cont] for stop, cont in frozen if stop <= moment and (cont is None or moment < cont)), None)

    return SimpleNamespace(pid=pid, index=pid, frozen=list(frozen), exited_at=exited, killed_at=exited,
                           frozen_at=frozen_at)


def taken_over(resumed_by="vm:2"):
    """A run on vm:1, taken over at 10 s by vm:2, run again by `resumed_by` from 11 s."""
    return [event(0, None, "queued"), event(1, "queued", "running", "vm:1"),
            event(10, "running", "queued", "vm:2", "lease expired"), event(11, "queued", "running", resumed_by),
            event(12, "running", "succeeded", resumed_by)]


def test_one_clean_run_is_not_a_duplicate():
    events = [event(0, None, "queued"), event(1, "queued", "running", "vm:1"), event(2, "running", "succeeded", "vm:1")]
    assert duplicate_reasons(events, [(1, at(1.5))], []) == []


def test_two_terminal_events_are_a_duplicate():
    events = [event(0, None, "queued"), event(1, "queued", "running", "vm:1"), event(2, "running", "succeeded", "vm:1"),
              event(3, "running", "succeeded", "vm:1")]
    assert "2 terminal events" in duplicate_reasons(events, None, [])[0]


def test_success_written_by_a_superseded_run_is_a_duplicate():
    events = taken_over()[:-1] + [event(12, "running", "succeeded", "vm:1")]
    assert any("succeeded by vm:1 while its run was on vm:2" in r for r in duplicate_reasons(events, None, []))


def test_with_attempts_in_the_logs_a_late_line_of_the_earlier_attempt_is_a_duplicate():
    assert duplicate_reasons(taken_over(), [(1, at(5)), (2, at(11.5))], []) == []
    [reason] = duplicate_reasons(taken_over(), [(1, at(5)), (1, at(11.2)), (2, at(11.5))], [])
    assert "attempt 1 wrote 1 log line(s) after attempt 2 started" in reason


def test_without_attempts_a_frozen_worker_resumed_after_the_takeover_is_a_duplicate():
    resumed = worker(1, frozen=[(at(2), at(14))])
    assert "frozen" in duplicate_reasons(taken_over(), None, [resumed])[0]
    killed_while_frozen = worker(1, frozen=[(at(2), None)], exited=at(13))
    assert duplicate_reasons(taken_over(), None, [killed_while_frozen]) == []
    killed = worker(1, exited=at(5))
    assert duplicate_reasons(taken_over(), None, [killed]) == []


def test_recovery_is_the_first_progress_of_an_affected_job_after_the_fault():
    snapshot = Snapshot(jobs={}, events={"a": taken_over(), "b": [event(0, None, "queued")],
                                         "done": [event(0, None, "queued"), event(1, "queued", "running", "vm:1"),
                                                  event(2, "running", "succeeded", "vm:1")]}, logs=None)
    assert recovery_s(Fault("kill", at(5), affected={"a"}), snapshot) == 6.0
    assert recovery_s(Fault("redis-wipe", at(5), affected={"b"}), snapshot) == math.inf
    assert recovery_s(Fault("kill", at(5), affected=set()), snapshot) is None
    assert recovery_s(Fault("kill", at(5), affected={"done"}), snapshot) is None  # finished before the fault


def test_a_queued_job_is_lost_and_its_refused_client_is_named():
    jobs = {"a" * 36: {"kind": "sd", "status": "queued", "error": None, "params": {"prompt": "soak sd #0"}},
            "b" * 36: {"kind": "sd", "status": "succeeded", "error": None, "params": {"prompt": "soak sd #1"}}}
    events = {"a" * 36: [event(1, None, "queued", reason="submitted")],
              "b" * 36: [event(0, None, "queued"), event(1, "queued", "running", "vm:1"), event(2, "running", "succeeded", "vm:1")]}
    refused = Submission("sd #0", None, 1, "OperationalError: gone", match={"kind": "sd", "prompt": "soak sd #0"})
    wipe = Fault("redis-wipe", at(3), affected={"a" * 36})
    report = audit(Snapshot(jobs, events, None), [refused], [wipe], [], 2, T0, "gave up")
    assert not report.ok and len(report.lost) == 1 and report.succeeded == 1
    assert "still queued" in report.lost[0] and "redis-wipe at +3.0s" in report.lost[0] and "client exited 1" in report.lost[0]
    assert "stored anyway: aaaaaaaa, queued" in report.refused[0]
    assert "-> 1 lost, 0 duplicated, 0 failed, 1 refused" in report.final_line()
    assert "LOST" in report.failure_message()
