"""A job kind in a package of its own (tests/plugins/genq_echo), pip-installed into this venv: genq finds
it through its `genq.kinds` entry point in every new process (the CLI, a worker), and runs its jobs
end to end. A plugin that is broken is skipped with a one-line warning."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests" / "plugins" / "genq_echo"
BIN = Path(sys.executable).parent
BUILT_IN = ["train-vae", "interpolate", "sample-vae", "sd"]
KINDS_NOW = "import json; from genq.core.kinds import KINDS; print(json.dumps(list(KINDS)))"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def echo_plugin(tmp_path_factory):
    """genq-echo installed into the venv for this module's tests (built from a copy: nothing lands in the tree)."""
    source = tmp_path_factory.mktemp("plugin") / "genq_echo"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(source))
    yield
    pip("uninstall", "-y", "--quiet", "genq-echo")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_a_new_process_knows_the_plugin_kind_beside_the_built_in_ones(echo_plugin):
    result = run(sys.executable, "-c", KINDS_NOW)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert json.loads(result.stdout) == BUILT_IN + ["echo"]


def test_the_cli_lists_the_plugin_kind_and_its_options(echo_plugin):
    listing = run(str(BIN / "client"), "submit", "--help")
    assert listing.returncode == 0, listing.stderr
    assert any(line.split()[:2] == ["echo", "Say"] for line in listing.stdout.splitlines()), listing.stdout
    described = run(str(BIN / "client"), "submit", "echo", "--help")
    flat = " ".join(described.stdout.split())
    assert described.returncode == 0, described.stderr
    assert "--text TEXT What to say. [required, or swept]" in flat and "How often. [1..10] [default: 1]" in flat
    assert "--tone [calm|loud]" in flat and "--seed" in flat


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("artifact_env", ["folder", "s3"], indirect=True)
def test_an_echo_job_runs_end_to_end_on_a_worker(echo_plugin, genq):
    # Given a worker (a new process: it finds the plugin as the CLI does)
    genq.start_worker()
    # When an echo job is submitted and waited for
    job = json.loads(genq.client("submit", "echo", "--text", "hi", "--times", "3", "--tone", "loud", "--wait",
                                 "--timeout", "120", "--json").stdout)
    # Then it succeeded with its result, its artifact and its metric, and its seed was recorded
    assert job["status"] == "succeeded", job
    assert job["result"] == {"echoed": "HI HI HI", "length": 8}
    assert genq.artifact_paths(job["id"])["echo.txt"].read_text() == "HI HI HI"
    shown = genq.client_json("show", job["id"])
    assert shown["metrics"] == {"length": [{"step": 1, "value": 8.0}]}
    assert isinstance(shown["params"]["seed"], int)


def test_the_readme_example_is_this_package():
    readme = (REPO / "README.md").read_text().split("## Adding a job kind", 1)[1].split("\n## ", 1)[0]
    module = readme.split("```python\n", 1)[1].split("```", 1)[0]
    project = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    assert module == (PLUGIN / "genq_echo" / "echo.py").read_text()
    assert project == (PLUGIN / "pyproject.toml").read_text()


def broken_plugins(folder: Path) -> dict[str, str]:
    """A distribution (its metadata on PYTHONPATH) with three broken kinds and a working one."""
    (folder / "clash_kind.py").write_text(
        "from genq.core.params import JobParams\n\n\n"
        "class Clash(JobParams):\n    kind = 'sd'\n    run_function = 'clash_kind:run'\n")
    (folder / "fine_kind.py").write_text(
        "from genq.core.params import JobParams\n\n\n"
        "class Fine(JobParams):\n    \"\"\"Fine.\"\"\"\n\n    kind = 'fine'\n    run_function = 'fine_kind:run'\n")
    info = folder / "genq_broken-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: genq-broken\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[genq.kinds]\nmissing = genq_no_such_module:Kind\n"
                                           "notakind = json:JSONDecoder\nclash = clash_kind:Clash\nfine = fine_kind:Fine\n")
    return {"PYTHONPATH": str(folder)}


def test_broken_plugins_are_skipped_with_a_one_line_warning_each(tmp_path):
    env = broken_plugins(tmp_path)
    result = run(sys.executable, "-c", KINDS_NOW, env=env)
    assert result.returncode == 0, result.stderr
    kinds = [kind for kind in json.loads(result.stdout) if kind != "echo"]  # echo: installed while this module runs
    assert kinds == BUILT_IN + ["fine"]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3, result.stderr
    for line, name, why in zip(warnings, ("clash", "missing", "notakind"),
                               ("its kind 'sd' is taken by genq.core.kinds.sd.SD",
                                "ModuleNotFoundError: No module named 'genq_no_such_module'",
                                "is not a subclass of genq.core.params.JobParams")):
        assert line.startswith(f"skipping job kind plugin genq-broken ({name} = ") and why in line, line
    # And the CLI still works, with the working plugin's command
    listing = run(str(BIN / "client"), "submit", "--help", env=env)
    assert listing.returncode == 0 and "fine" in listing.stdout.split() and len(listing.stderr.splitlines()) == 3
