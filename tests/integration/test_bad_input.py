"""Every bad input through the real CLI: exit 2, one clear line on stderr, and nothing stored."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import BIN

pytestmark = pytest.mark.integration

LONG = "x" * 2001

# (arguments after `submit`, words the one error line must contain)
BAD_SUBMITS = [
    (["train-vae", "--beta", "inf"], ["--beta", "finite"]),
    (["train-vae", "--beta", "nan"], ["--beta", "finite"]),
    (["train-vae", "--lr", "-inf"], ["--lr", "finite"]),
    (["train-vae", "--weight-decay", "NaN"], ["--weight-decay", "finite"]),
    (["train-vae", "--lr", "0"], ["--lr", "greater than 0"]),
    (["train-vae", "--epochs", "0"], ["--epochs"]),
    (["train-vae", "--epochs", "1000000"], ["--epochs", "1000"]),
    (["train-vae", "--capacity", "100000"], ["--capacity", "512"]),
    (["train-vae", "--latent-dims", "100000"], ["--latent-dims", "512"]),
    (["train-vae", "--batch-size", "10000000"], ["--batch-size", "60000"]),
    (["train-vae", "--train-limit", "60001"], ["--train-limit", "60000"]),
    (["train-vae", "--seed", "-1"], ["--seed"]),
    (["train-vae", "--seed", "4294967296"], ["--seed"]),
    (["train-vae", "--epochs", "two"], ["--epochs", "integer"]),
    (["train-vae", "--epochz", "2"], ["--epochz"]),
    (["interpolate", "--model", "%%%%"], ["--model", "no job"]),
    (["interpolate", "--model", "________"], ["--model", "no job"]),
    (["interpolate", "--model", "{job}", "--steps", "100000"], ["--steps", "256"]),
    (["interpolate", "--model", "{job}", "--from-digit", "11", "--to-digit", "1"], ["--from-digit"]),
    (["interpolate", "--model", "{job}", "--from-digit", "1"], ["--to-digit"]),
    (["sample-vae", "--model", "{job}", "--count", "100000"], ["--count", "1024"]),
    (["sample-vae", "--model", "{sd_job}"], ["--model", "not a train-vae job"]),
    (["sd", "--prompt", LONG], ["--prompt", "2000"]),
    (["sd", "--prompt", "a cat", "--negative", LONG], ["--negative", "2000"]),
    (["sd", "--prompt", "   "], ["--prompt", "blank"]),
    (["sd", "--prompt", "a cat", "--guidance", "nan"], ["--guidance", "finite"]),
    (["sd", "--prompt", "a cat", "--width", "100"], ["--width", "multiple of 8"]),
    (["sd", "--prompt", "a cat", "--num-images", "16", "--width", "2048", "--height", "2048"], ["GENQ_SD_MAX_PIXELS"]),
    (["sd", "--prompt", "a cat", "--steps", "100", "--width", "1024", "--height", "1024", "--num-images", "8"],
     ["GENQ_SD_MAX_PIXEL_STEPS"]),
    (["sd", "--prompt", "a cat", "--scheduler", "lms"], ["--scheduler"]),
    (["sd", "--prompt", "a cat", "--model", "/etc"], ["--model", "model_index.json"]),
    (["sd", "--prompt", "a cat", "--model", "../../etc/passwd"], ["--model"]),
    (["sd", "--prompt", "a cat", "--model", "/no/such/model"], ["--model", "no such"]),
    (["sd", "--prompt", "a cat", "--model", "not a model id"], ["--model", "hub model id"]),
    (["sd", "--prompt", "a cat", "--model", "{outside_root}"], ["--model", "GENQ_MODEL_ROOTS"]),
    # Text no store can keep: a NUL (U+0000) or a lone surrogate (what undecodable bytes of an argument become)
    (["sd", "--prompt", "a \udcff cat"], ["--prompt", "lone surrogate (U+DCFF)"]),
    (["sd", "--prompt", "a cat", "--negative", "\udcff"], ["--negative", "lone surrogate"]),
    (["sd", "--prompt", "a cat", "--model", "org/\udcff"], ["--model", "lone surrogate"]),
    (["sd", "--prompt", "a cat", "--sweep", "negative=blurry,\udcff"], ["--negative", "lone surrogate"]),
    (["sd", "--prompt-file", "{nul_prompts}"], ["line 2: must not contain the NUL character (U+0000)"]),
    (["train-vae", "--idempotency-key", "key-\udcff"], ["--idempotency-key", "lone surrogate"]),
    (["train-vae", "--queue", "gpu\udcff"], ["queue"]),
    (["train-vae", "--after", "\udcff"], ["--after", "lone surrogate"]),
    (["train-vae", "--sweep", "epochs=1,2", "--group-name", "betas \udcff"], ["--group-name", "lone surrogate"]),
    (["train-vae", "--sweep", "epochs=1,2", "--group-name", "g" * 201], ["--group-name", "at most 200 characters"]),
    # Measured before it is made: six billion points are refused at once, --yes or not
    (["train-vae", "--sweep", "seed=1..100000", "--sweep", "train-limit=1..60000", "--yes"],
     ["6,000,000,000 jobs", "even with --yes"]),
]


def count_jobs(genq) -> int:
    return len(genq.client_json("list", "--limit", "1000"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # refused before any store is written: one store
def test_bad_input_is_refused_with_one_line_and_nothing_stored(genq, tmp_path, tiny_model):
    roots = tmp_path / "models"
    outside = tmp_path / "elsewhere" / "model"
    outside.mkdir(parents=True)
    (outside / "model_index.json").write_text("{}")
    genq.env["GENQ_MODEL_ROOTS"] = str(roots)
    genq.client("db", "upgrade")
    job = genq.client("submit", "train-vae", "--epochs", "1").stdout.strip()  # queued; no worker runs it
    genq.env["GENQ_MODEL_ROOTS"] = ""
    sd_job = genq.client("submit", "sd", "--prompt", "a cat", "--model", str(tiny_model)).stdout.strip()
    genq.env["GENQ_MODEL_ROOTS"] = str(roots)
    stored = count_jobs(genq)
    assert stored == 2
    nul_prompts = tmp_path / "prompts.txt"
    nul_prompts.write_text("a red bicycle\na \x00 lighthouse\n")
    values = {"{job}": job[:8], "{sd_job}": sd_job[:8], "{outside_root}": str(outside), "{nul_prompts}": str(nul_prompts)}

    cases = [([values.get(arg, arg) for arg in args], words) for args, words in BAD_SUBMITS]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one client process per case, two at a time
        results = list(pool.map(lambda case: genq.client("submit", *case[0], check=False), cases))
    problems = []
    for (args, words), result in zip(cases, results):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        shown = " ".join(args)[:80]
        if result.returncode != 2:
            problems.append(f"{shown}: exit {result.returncode}, stderr {result.stderr[-300:]!r}")
        elif len(lines) != 1 or not lines[0].startswith("Error: ") or not all(w in lines[0] for w in words):
            problems.append(f"{shown}: stderr {result.stderr[-300:]!r}, wanted one line with {words}")
        elif result.stdout.strip():
            problems.append(f"{shown}: printed {result.stdout!r}")
    assert problems == [], "\n".join(problems)
    assert count_jobs(genq) == stored


def test_job_prefixes_are_literal(genq):
    genq.client("db", "upgrade")
    job = genq.client("submit", "train-vae", "--epochs", "1").stdout.strip()
    assert genq.client_json("status", job[:6])["id"] == job
    for pattern in ("%%%%", "____", job[:4] + "%", job[:4] + "_"):
        result = genq.client("status", pattern, check=False)
        assert result.returncode == 1 and "no job" in result.stderr, (pattern, result.stderr)


def test_the_worker_checks_model_roots_again(genq, tiny_model, tmp_path):
    """A submitter whose own settings allow any path still cannot make a worker read outside its roots."""
    genq.client("db", "upgrade")
    job = genq.client("submit", "sd", "--prompt", "a cat", "--steps", "1", "--width", "64", "--height", "64",
                      "--model", str(tiny_model)).stdout.strip()
    genq.start_worker(env={"GENQ_MODEL_ROOTS": str(tmp_path / "models")})
    final = genq.client_json("wait", job, "--timeout", "120", check=False)
    assert final["status"] == "failed"
    assert "GENQ_MODEL_ROOTS" in final["error"] and "\n" not in final["error"]
    assert genq.client_json("artifacts", job) == []


@pytest.mark.parametrize("variable, value, says", [
    ("GENQ_LEASE", "inf", "GENQ_LEASE: must be a finite number of seconds > 0 and at most 31,622,400, got 'inf'"),
    ("GENQ_RETRY_FOR", "nan", "GENQ_RETRY_FOR: must be a finite number of seconds >= 0"),
    ("GENQ_HEARTBEAT_INTERVAL", "0", "GENQ_HEARTBEAT_INTERVAL: must be a finite number of seconds > 0 and below GENQ_LEASE (30)"),
])
def test_a_bad_setting_is_one_line_from_the_client_and_the_worker(tmp_path, variable, value, says):
    env = {**os.environ, "GENQ_HOME": str(tmp_path), variable: value}
    commands = [([str(BIN / "client"), "config"], 2, "Error: "),
                ([str(BIN / "client"), "submit", "train-vae", "--epochs", "1"], 2, "Error: "),
                ([str(BIN / "genq-worker")], 1, "genq-worker: "),  # said once by the supervisor, no worker started
                ([sys.executable, "-m", "genq.worker.child"], 78, "genq-worker: ")]  # one worker, as the supervisor runs it
    for command, code, prefix in commands:
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == code, (command, result.stderr)
        assert result.stderr.startswith(prefix + says) and result.stderr.count("\n") == 1, (command, result.stderr)
        assert result.stdout == "", command
    assert not (tmp_path / "genq.sqlite3").exists()  # nothing was made either
