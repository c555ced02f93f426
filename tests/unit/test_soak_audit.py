"""The chaos soak's counting rules (bench.soak_audit) on hand-made audit rows."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from bench.soak_audit import (Fault, Snapshot, Submission, WorkerLog, audit, child_restarts, crash_lines,
                               duplicate_reasons, recovery_s)

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


def succeeded_once(job_id="vm:1"):
    return [event(0, None, "queued"), event(1, "queued", "running", job_id), event(2, "running", "succeeded", job_id)]


def sd_row(status, prompt):
    return {"kind": "sd", "status": status, "error": None, "params": {"prompt": prompt}}


def test_an_outage_recovers_from_when_the_service_was_back():
    snapshot = Snapshot(jobs={}, events={"a": taken_over()}, logs=None)
    outage = Fault("postgres-down", at(5), affected={"a"}, restored_at=at(9))
    assert recovery_s(outage, snapshot) == 2.0  # running again at 11 s, 2 s after the database came back
    early = Fault("redis-down", at(5), affected={"a"}, restored_at=at(20))
    assert recovery_s(early, snapshot) == 0.0  # progress before the service was back counts as none to wait for


def outage_client(started, ended, error="Error: the database did not answer: connection refused", prompt="soak a"):
    return Submission("sd #0", None, 1, error, match={"kind": "sd", "prompt": prompt}, started=at(started),
                      ended=at(ended))


def test_a_client_that_gave_up_while_the_database_was_down_is_not_refused():
    outage = Fault("postgres-down", at(10), restored_at=at(130))
    jobs = {"b" * 36: sd_row("succeeded", "soak b")}
    events = {"b" * 36: succeeded_once()}
    gave_up = outage_client(20, 81)
    report = audit(Snapshot(jobs, events, None), [gave_up], [outage], [], 2, T0, "every job is terminal")
    assert report.ok and report.refused == []
    assert "sd #0: exit 1" in report.refused_in_outage[0] and "not stored" in report.refused_in_outage[0]
    assert "1 postgres down (120 s)" in report.final_line()


def test_a_client_that_gave_up_after_the_database_was_back_is_refused():
    outage = Fault("postgres-down", at(10), restored_at=at(30))
    late = outage_client(20, 30 + 60)  # its retries ran 60 s past the outage: it should have got through
    other = outage_client(20, 25, error="Error: something else")  # said something else than the outage
    jobs = {"b" * 36: sd_row("succeeded", "soak b")}
    report = audit(Snapshot(jobs, {"b" * 36: succeeded_once()}, None), [late, other], [outage], [], 2, T0, "done")
    assert not report.ok and len(report.refused) == 2 and report.refused_in_outage == []


def test_a_job_stored_by_a_client_that_gave_up_in_an_outage_must_still_end():
    outage = Fault("postgres-down", at(10), affected=set(), restored_at=at(130))
    jobs = {"a" * 36: sd_row("queued", "soak a")}
    stored = outage_client(5, 70)  # the insert committed, reading the job back did not
    events = {"a" * 36: [event(6, None, "queued")]}
    report = audit(Snapshot(jobs, events, None), [stored], [outage], [], 2, T0, "gave up")
    assert "stored anyway: aaaaaaaa, queued" in report.refused_in_outage[0]
    assert not report.ok and "client exited 1 during a database outage" in report.lost[0]


def test_one_submit_that_stored_two_jobs_is_a_duplicate():
    jobs = {"a" * 36: sd_row("succeeded", "soak sd #3"), "b" * 36: sd_row("succeeded", "soak sd #3"),
            "c" * 36: sd_row("succeeded", "soak sd #4")}
    events = {job_id: succeeded_once() for job_id in jobs}
    retried = Submission("sd #3", "b" * 36, 0, match={"kind": "sd", "prompt": "soak sd #3"})
    single = Submission("sd #4", "c" * 36, 0, match={"kind": "sd", "prompt": "soak sd #4"})
    report = audit(Snapshot(jobs, events, None), [retried, single], [], [], 2, T0, "done")
    assert report.duplicated == ["sd #3: one submit stored 2 jobs: bbbbbbbb succeeded, aaaaaaaa succeeded"]


def test_a_run_frozen_in_its_write_that_wrote_after_it_was_resumed_is_a_duplicate():
    frozen = Fault("frozen-in-write", at(3), affected={"a"}, fenced={"a": (1, 2)})
    clean = Snapshot({"a": sd_row("succeeded", "x")}, {"a": taken_over()},
                     {"a": [(1, at(1.5)), (1, at(2)), (2, at(11.5))]})
    assert audit(clean, [], [frozen], [], 2, T0, "done").duplicated == []
    # its transaction committed after the takeover: its lines carry their creation time, before the takeover
    late = Snapshot({"a": sd_row("succeeded", "x")}, {"a": taken_over()},
                    {"a": [(1, at(1.5)), (1, at(2)), (1, at(2.5)), (2, at(11.5))]})
    [line] = audit(late, [], [frozen], [], 2, T0, "done").duplicated
    assert "attempt 1, frozen inside its write and taken over, had 2 log line(s) when resumed and 3" in line


WORKER_LOG = """\
2026-01-01 00:00:00,000 INFO genq.supervisor: started vm-0:cpu0 (pid 101, cpu)
2026-01-01 00:00:09,000 WARNING genq.supervisor: vm-0:cpu0 (pid 101) was killed by SIGKILL after 9.0 s; starting it again in 1 s
2026-01-01 00:00:10,000 INFO genq.supervisor: started vm-0:cpu0 (pid 102, cpu)
2026-01-01 00:00:20,000 WARNING genq.broker: dropped a malformed message (not JSON: Expecting value): '[1, 2'
"""


def test_a_worker_child_that_died_on_its_own_is_a_crash():
    killed_by_the_soak = WorkerLog("worker 0", WORKER_LOG, children_killed={101})
    assert crash_lines([killed_by_the_soak]) == [] and child_restarts([killed_by_the_soak]) == 1
    died = WorkerLog("worker 1", WORKER_LOG.replace("was killed by SIGKILL", "exited with code 1"))
    [line] = crash_lines([died])
    assert line == "worker 1: child vm-0:cpu0 (pid 101) exited with code 1 and was restarted"
    celery = WorkerLog("worker 2", WORKER_LOG + "2026-01-01 00:00:21,000 CRITICAL celery.worker: "
                                                "Unrecoverable error: JSONDecodeError('Expecting value')\n",
                       children_killed={101})
    assert "Unrecoverable error: JSONDecodeError" in crash_lines([celery])[0]
    report = audit(Snapshot({}, {}, None), [], [], [], 2, T0, "done", [died])
    assert not report.ok and "1 worker crashes" in report.final_line()


def test_a_fault_whose_expected_reaction_did_not_happen_fails_the_soak():
    frozen = Fault("frozen-in-write", at(3), affected={"a"}, problem="job a was not taken over")
    report = audit(Snapshot({}, {}, None), [], [frozen], [], 2, T0, "done")
    assert not report.ok and report.unmet == ["frozen-in-write at +3.0s: job a was not taken over"]
    assert "1 frozen write" in report.final_line() and "1 faults not recovered as expected" in report.final_line()


def test_the_last_line_lists_every_kind_of_fault():
    faults = [Fault("postgres-down", at(1), took_s=120.4, restored_at=at(121)), Fault("frozen-in-write", at(130)),
              Fault("redis-down", at(140), took_s=180.2, restored_at=at(320)), Fault("malformed", at(330))]
    line = audit(Snapshot({}, {}, None), [], faults, [], 3, T0, "done").final_line()
    assert ("0 kills, 0 stops, 0 redis wipes, 0 postgres restarts, 0 client kills, 1 postgres down (120 s), "
            "1 frozen write, 1 redis down (180 s), 1 malformed push -> 0 lost, 0 duplicated, 0 failed") in line


def test_a_job_that_gave_up_at_the_attempts_limit_with_a_fault_on_every_run_is_worn_out_not_failed():
    job_id = "c" * 36
    jobs = {job_id: {"kind": "sd", "status": "failed", "params": {},
                     "error": "lease of vm:1 expired (attempt 3); gave up after 3 attempts"}}
    kills = [Fault("kill", at(10 * i), affected={job_id}) for i in (1, 2, 3)]
    report = audit(Snapshot(jobs, {}, None), [], kills, [], 2, T0, "all ended")
    assert report.ok and report.failed == [] and len(report.worn_out) == 1
    assert "hit by 3 faults (kill at +10.0s, kill at +20.0s, kill at +30.0s)" in report.worn_out[0]
    assert "0 failed, 1 worn out by faults (expected)" in report.final_line()


def test_a_job_that_gave_up_with_a_run_no_fault_took_is_failed_and_names_its_faults():
    job_id = "d" * 36
    jobs = {job_id: {"kind": "sd", "status": "failed", "params": {},
                     "error": "lease of vm:1 expired (attempt 3); gave up after 3 attempts"}}
    faults = [Fault("kill", at(10), affected={job_id}), Fault("stop", at(20), affected={job_id}),
              Fault("redis-wipe", at(25), affected={job_id}),  # wipes a message; takes no run
              Fault("kill", at(30), affected={job_id}, injected=False)]
    report = audit(Snapshot(jobs, {}, None), [], faults, [], 2, T0, "all ended")
    assert not report.ok and report.worn_out == []
    [line] = report.failed
    assert line.endswith("hit by 2 faults (kill at +10.0s, stop at +20.0s)")
    assert "1 failed" in report.final_line()
