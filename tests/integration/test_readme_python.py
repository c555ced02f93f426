"""The README's Python example runs as written, against a real worker, Redis and SQLite."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_example() -> str:
    section = README.read_text().split("### From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_readme_python_example_runs_as_written(genq):
    from genq.core.sd.tiny import make_tiny_model

    make_tiny_model(genq.home / "tiny-sd")  # `client models make-tiny ./tiny-sd`, as the README does before
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    ran = subprocess.run([sys.executable, "-c", readme_python_example()], env=genq.env, cwd=genq.home,
                         capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[1].startswith("succeeded ") and float(lines[1].split()[1]) > 0  # the first job's test loss
    assert lines[-1] == "{'succeeded': 8}"  # two prompts x four seeds
