"""Users and their limits (`client users ...`), on both stores: tokens shown once and kept as hashes,
every job recording its owner, max_queued refused at submit, max_running held at the claim with two
real workers."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.integration

FAST_SD = ["--width", "64", "--height", "64", "--steps", "2"]


def rows(genq, sql: str):
    engine = create_engine(genq.env["GENQ_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).all()
    finally:
        engine.dispose()


def test_users_are_added_listed_limited_and_revoked_without_their_secrets_kept(genq):
    added = genq.client_json("users", "add", "alice")
    assert added["name"] == "alice" and len(added["token"]) >= 40 and added["webhook_secret"]
    admin = genq.client("users", "add", "root", "--admin").stdout
    assert "root (admin)" in admin

    (stored,) = rows(genq, "SELECT token_sha256 FROM users WHERE name = 'alice'")
    assert stored[0] == hashlib.sha256(added["token"].encode()).hexdigest()  # the hash, never the token
    listed = genq.client("users", "list", "--json").stdout
    assert added["token"] not in listed and added["webhook_secret"] not in listed
    assert [(u["name"], u["admin"]) for u in json.loads(listed)] == [("alice", False), ("root", True)]

    again = genq.client("users", "add", "alice", check=False)
    assert again.returncode == 2 and again.stderr.strip() == "Error: a user named 'alice' exists already"
    bad = genq.client("users", "add", "Alice Smith", check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

    assert "max running 2, max queued 5" in genq.client("users", "set", "alice", "--max-running", "2",
                                                         "--max-queued", "5").stdout
    assert "max running none, max queued 5" in genq.client("users", "set", "alice", "--no-max-running").stdout
    missing = genq.client("users", "set", "bob", "--max-queued", "1", check=False)
    assert missing.returncode == 2 and "no user 'bob'" in missing.stderr

    genq.client("users", "revoke", "alice")
    (alice,) = [u for u in genq.client_json("users", "list") if u["name"] == "alice"]
    assert alice["revoked_at"] is not None


def test_every_job_records_its_owner(genq, tiny_model):
    local = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "a", *FAST_SD).stdout.strip()
    mine = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "b", *FAST_SD,
                       env={"GENQ_USER": "alice"}).stdout.strip()
    group = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "c", "--sweep", "seed=1,2", *FAST_SD,
                        env={"GENQ_USER": "alice"}).stdout.strip()
    owners = dict(rows(genq, "SELECT id, owner FROM jobs"))
    assert owners[local] == "local" and owners[mine] == "alice"
    assert [owner for job_id, owner in owners.items() if job_id not in (local, mine)] == ["alice", "alice"]
    assert rows(genq, f"SELECT owner FROM groups WHERE id = '{group}'") == [("alice",)]
    bad = genq.client("list", env={"GENQ_USER": "Not A Name"}, check=False)
    assert bad.returncode == 2 and "GENQ_USER" in bad.stderr


def test_a_submit_past_max_queued_is_refused_and_stores_nothing(genq, tiny_model):
    genq.client("users", "add", "alice")
    genq.client("users", "set", "alice", "--max-queued", "2")
    as_alice = {"GENQ_USER": "alice"}
    for prompt in ("one", "two"):  # no worker: they stay queued
        genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", prompt, *FAST_SD, env=as_alice)
    third = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "three", *FAST_SD, env=as_alice,
                        check=False)
    assert third.returncode == 2 and third.stdout == ""
    assert third.stderr.strip().splitlines() == [
        "Error: user alice may have at most 2 jobs waiting or queued and has 2: 1 more job would pass that limit "
        "(wait for some to start, or ask an admin for `client users set --max-queued`)"]
    sweep = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "s", "--sweep", "seed=1,2", *FAST_SD,
                        env=as_alice, check=False)
    assert sweep.returncode == 2 and "2 more jobs would pass that limit" in sweep.stderr
    assert rows(genq, "SELECT count(*) FROM jobs") == [(2,)] and rows(genq, "SELECT count(*) FROM groups") == [(0,)]
    genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "other", *FAST_SD)  # another owner: no limit
    assert rows(genq, "SELECT count(*) FROM jobs") == [(3,)]


def test_max_running_holds_at_the_claim_with_two_workers(genq, tiny_model):
    genq.client("users", "add", "alice")
    genq.client("users", "set", "alice", "--max-running", "1")
    # No re-sent wake-ups: a job held back by the limit can only start because a finished job of its owner woke it.
    slow_resend = {"GENQ_RESEND_AFTER": "600"}
    genq.start_worker(env=slow_resend)
    genq.start_worker(env=slow_resend)
    group = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", "x", "--sweep", "seed=1..3",
                        *FAST_SD, env={"GENQ_USER": "alice"}).stdout.strip()
    peak, deadline = 0, time.monotonic() + 240
    while time.monotonic() < deadline:
        states = [status for (status,) in rows(genq, f"SELECT status FROM jobs WHERE group_id = '{group}'")]
        peak = max(peak, states.count("running"))
        if all(state in ("succeeded", "failed", "cancelled") for state in states):
            break
        time.sleep(0.05)
    assert states == ["succeeded"] * 3
    assert peak == 1
    starts = rows(genq, "SELECT started_at, finished_at FROM jobs ORDER BY started_at")
    for (_, finished), (started, _) in zip(starts, starts[1:]):
        assert started >= finished  # one after another, never side by side


def test_a_job_held_back_by_max_running_is_refused_at_the_claim_and_not_re_sent_until_a_slot_frees(genq):
    from genq.core.kinds.train_vae import TrainVAE
    from genq.core.lifecycle import Lifecycle, Outcome
    from genq.core.config import load_settings
    from genq.core.store.states import JobStatus

    genq.client("users", "add", "alice")
    genq.client("users", "set", "alice", "--max-running", "1")
    store = genq.store()
    lifecycle = Lifecycle(store, load_settings(genq.env))
    first, second = (store.create(TrainVAE(epochs=1), owner="alice") for _ in range(2))
    other = store.create(TrainVAE(epochs=1), owner="bob")  # no user, no limit

    claimed = lifecycle.claim(first.id, "w1")
    assert claimed is not None and lifecycle.claim(second.id, "w2") is None  # alice has her one run
    assert lifecycle.claim(other.id, "w2") is not None
    assert store.get(second.id).status == "queued"
    assert second.id not in [job_id for job_id, _ in store.queued_unsent_since(-1)]  # held back: not re-sent

    assert store.startable_of_owner_of(first.id) == []  # no slot while it runs
    lifecycle.finish(first.id, claimed.attempts, Outcome(JobStatus.SUCCEEDED, {"result": {}}), "w1")
    assert second.id in [job_id for job_id, _ in store.queued_unsent_since(-1)]
    assert lifecycle.claim(second.id, "w2") is not None
