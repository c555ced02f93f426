"""Safe outputs: `artifacts --download` writes only verified files inside DIR, and text another user wrote
is printed with its control and bidi characters made visible (and stays exact in --json)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from genq.core.store.artifacts import StoredFile
from genq.core.store.states import JobStatus

pytestmark = pytest.mark.integration

FAST = ["--steps", "2", "--width", "64", "--height", "64"]
TITLE, RED, RLO = "\x1b]0;title\x07", "\x1b[31m", "\u202e"
RAW = ("\x1b", "\x07", "\u202e")
SHOWN = ("\\x1b]0;title\\x07", "\\x1b[31m", "\\u202e")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


def set_artifact_row(genq, job_id: str, current_name: str, **values) -> None:
    """Forges the index row, as someone with write access to the database could."""
    engine = create_engine(genq.env["GENQ_DATABASE_URL"])
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE artifacts SET {assignments} WHERE job_id = :job_id AND name = :current_name"),
                     {**values, "job_id": job_id, "current_name": current_name})
    engine.dispose()


def refused_download(genq, job_id: str, folder: Path) -> str:
    """Runs a download that must be refused; returns its one stderr line after checking DIR holds nothing."""
    result = genq.client("artifacts", job_id, "--download", str(folder), check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert files_in(folder) == []  # all-or-nothing: nothing unverified (nor anything else) is left in DIR
    return lines[0]


@pytest.fixture
def sd_job(genq, tiny_model):
    """A real sd job with three artifacts (image-0.png, image-1.png, grid.png)."""
    genq.start_worker()
    job = genq.client_json("submit", "sd", "--model", str(tiny_model), "--prompt", "a red bicycle",
                           "--num-images", "2", "--seed", "3", *FAST, "--wait")
    assert job["status"] == "succeeded", job
    return job["id"]


def test_download_copies_verified_files_and_refuses_forged_tampered_and_linked_ones(genq, sd_job, tmp_path):
    listed = genq.client_json("artifacts", sd_job)
    store_paths = {a["name"]: Path(a["path"]) for a in listed}

    # A normal download copies every artifact with the recorded hashes
    out = tmp_path / "out"
    downloaded = genq.client_json("artifacts", sd_job, "--download", str(out))
    assert files_in(out) == ["grid.png", "image-0.png", "image-1.png"]
    for item in downloaded:
        assert Path(item["path"]) == out / item["name"] and sha256_of(out / item["name"]) == item["sha256"]

    # A row whose path was forged to point outside the store is refused
    set_artifact_row(genq, sd_job, "image-0.png", relative_path="../../etc/passwd")
    line = refused_download(genq, sd_job, tmp_path / "forged-path")
    assert line == (f"Error: artifact image-0.png is refused: its recorded path '../../etc/passwd' "
                    f"is not {sd_job}/image-0.png")

    # And so is one whose name was forged too
    set_artifact_row(genq, sd_job, "image-0.png", name="../../etc/passwd", relative_path=f"{sd_job}/../../etc/passwd")
    line = refused_download(genq, sd_job, tmp_path / "forged-name")
    assert line.startswith("Error: artifact ../../etc/passwd is refused: artifact name must not contain")
    set_artifact_row(genq, sd_job, "../../etc/passwd", name="image-0.png", relative_path=f"{sd_job}/image-0.png")

    # A file changed in the store after the job wrote it is refused
    image = store_paths["image-1.png"]
    original = image.read_bytes()
    image.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    line = refused_download(genq, sd_job, tmp_path / "tampered")
    assert line == ("Error: artifact image-1.png does not match its recorded sha256: "
                    "the file was changed after the job wrote it")
    image.write_bytes(original)

    # A symlink planted in the store is refused even when what it points to has the right bytes
    outside = tmp_path / "outside.png"
    outside.write_bytes(store_paths["image-0.png"].read_bytes())
    store_paths["image-0.png"].unlink()
    store_paths["image-0.png"].symlink_to(outside)
    line = refused_download(genq, sd_job, tmp_path / "linked")
    assert line == "Error: artifact image-0.png is refused: 'image-0.png' in the artifact store is a symbolic link"


def hostile_job(genq, tiny_model) -> tuple[str, dict[str, str]]:
    """An sd job (never run) whose every user-written field carries terminal escapes."""
    hostile = {
        "prompt": f"a {TITLE} red {RED}bicycle{RLO}",
        "negative": f"blurry{RED}{RLO}",
        "progress": f"denoising {RED}step{RLO}",
        "log": f"loading {TITLE}\n\tnext line {RED}{RLO}",
        "worker": f"node{TITLE}",
        "error": f"it broke: {RED}{RLO}\nsecond line {TITLE}",
        "reason": f"because {TITLE}",
        "artifact": f"image{RLO}{RED}.png",
    }
    job_id = genq.client("submit", "sd", "--model", str(tiny_model), "--prompt", hostile["prompt"],
                         "--negative", hostile["negative"], *FAST).stdout.strip()
    store = genq.store()
    attempt = store.claim(job_id, hostile["worker"], lease_s=60).attempts  # as a worker would
    store.append_log(job_id, "info", hostile["log"], attempt)
    store.set_progress(job_id, attempt, 1, 2, hostile["progress"])
    store.record_artifact(job_id, attempt, StoredFile(name=hostile["artifact"], relative_path=f"{job_id}/x.png",
                                                      media_type="image/png", size=1, sha256="0" * 64))
    store.transition(job_id, JobStatus.RUNNING, JobStatus.FAILED, worker=hostile["worker"], reason=hostile["reason"],
                     values={"error": hostile["error"]})
    return job_id, hostile


def assert_inert(output: str) -> None:
    assert not any(raw in output for raw in RAW), repr(output)


def test_text_output_shows_escapes_and_json_keeps_the_exact_strings(genq, tiny_model):
    job_id, hostile = hostile_job(genq, tiny_model)

    # Text output: no raw control or bidi character, the escapes shown instead
    outputs = {command: genq.client(command, job_id).stdout for command in ("show", "status", "logs", "artifacts")}
    outputs["list"] = genq.client("list").stdout
    for command, output in outputs.items():
        assert_inert(output)
    assert all(shown in outputs["show"] for shown in SHOWN)
    assert "node\\x1b]0;title\\x07" in outputs["show"] and "it broke: \\x1b[31m\\u202e\\nsecond line" in outputs["show"]
    assert "denoising \\x1b[31mstep\\u202e" in outputs["status"] and "\\nsecond line" in outputs["status"]
    assert "image\\u202e\\x1b[31m.png" in outputs["artifacts"] and "image\\u202e\\x1b[31m.png" in outputs["show"]
    assert job_id in outputs["list"]
    # logs keep a message's own newlines and tabs, and escape the rest
    assert "loading \\x1b]0;title\\x07\n\tnext line \\x1b[31m\\u202e" in outputs["logs"]

    # JSON output: valid, ASCII-escaped, and the original strings come back exactly
    for args in (["status", job_id], ["show", job_id], ["list"], ["artifacts", job_id]):
        raw = genq.client(*args, "--json").stdout
        assert_inert(raw)
        assert "\\u001b" in raw
    status = genq.client_json("status", job_id)
    assert status["params"]["prompt"] == hostile["prompt"] and status["params"]["negative"] == hostile["negative"]
    assert status["error"] == hostile["error"] and status["worker"] == hostile["worker"]
    assert status["progress"]["message"] == hostile["progress"]
    show = genq.client_json("show", job_id)
    assert hostile["reason"] in [event["reason"] for event in show["events"]]
    assert [a["name"] for a in show["artifacts"]] == [hostile["artifact"]]
    assert genq.client_json("list")[0]["params"]["prompt"] == hostile["prompt"]
    assert genq.client_json("artifacts", job_id)[0]["name"] == hostile["artifact"]
