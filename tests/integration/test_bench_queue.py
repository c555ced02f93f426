"""Smoke test of `python -m bench.queue_overhead`: a handful of jobs on SQLite, through a real genq-worker."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_queue_benchmark_prints_its_ratio_last(capsys):
    from bench import queue_overhead

    queue_overhead.main(["--jobs", "4", "--stores", "sqlite"])

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: sqlite \d+\.\d", lines[-1]), lines[-3:]
    assert any(line.startswith("sqlite ") and line.split()[1] == "4" for line in lines), lines  # the table's row
