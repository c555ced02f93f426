"""Smoke test of `python -m bench.ui`: a small history on SQLite, each page's median and the ratio last."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_ui_benchmark_prints_each_pages_median_and_its_ratio_last(capsys):
    from bench import ui

    ui.main(["--jobs", "200", "--metrics", "2000", "--repeats", "3", "--stores", "sqlite"])

    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: sqlite jobs \d+\.\d job \d+\.\d", lines[-1]), lines[-3:]
    pages = {line.split()[1] for line in lines if line.startswith("sqlite ")}
    assert {"jobs", "filtered", "job"} <= pages, lines
