"""Smoke test of `python -m bench.submit`: a small sweep against as many single submits, on SQLite."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_submit_benchmark_prints_its_ratio_last(capsys):
    from bench import submit

    submit.main(["--jobs", "20", "--repeats", "1", "--stores", "sqlite"])

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: sqlite \d+\.\d", lines[-1]), lines[-3:]
    assert any(line.split()[:2] == ["sqlite", "20"] for line in lines), lines  # the table's row
